/**
 * Queue-drain benchmark (`make bench-drain`; not a test: it prints figures and asserts nothing about time).
 *
 * A device that was offline has queued N single-operation transactions (default 500, `DRAIN_TRANSACTIONS`)
 * in a real @powersync/node database. Each connector drains that queue to `serve` (fresh SQLite database
 * per run) through a TCP proxy that delays every chunk by half the round trip in each direction
 * (default 100 ms per round trip, `DRAIN_RTT_MS`): a mobile link. Connection set-up is not delayed, so
 * the figures leave out the TCP and TLS handshakes a real link adds per new connection (`serve` closes
 * the connection after each response), which would only widen the gap.
 *
 * Connectors:
 * - `PowerSyncUploader` (this package, defaults: up to 50 whole transactions per request, shape A);
 * - one transaction per request, the loop of the PowerSync documentation's example connector:
 *   `getNextCrudTransaction()`, send its operations, `complete()` (here one POST in shape B per
 *   transaction, which for single-operation transactions is also one request per operation).
 *
 * The drain loop calls `uploadData()` until the queue is empty, as the SDK's upload loop does while the
 * head of the queue moves.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { column, PowerSyncDatabase, Schema, Table } from '@powersync/node';

import { PowerSyncUploader, type FetchLike } from '../src/connector.js';
import { startBackend, USER_ID, type Backend } from '../test/backend.js';

const TRANSACTIONS = Number(process.env.DRAIN_TRANSACTIONS ?? 500);
const RTT_MS = Number(process.env.DRAIN_RTT_MS ?? 100);

const AppSchema = new Schema({ lists: new Table({ name: column.text, owner_id: column.text }) });

type Db = InstanceType<typeof PowerSyncDatabase>;

interface Connector {
  name: string;
  uploadData(db: Db): Promise<void>;
}

/** A TCP proxy on 127.0.0.1 that forwards to `target` and delays each chunk by `oneWayMs` in each direction. */
async function delayProxy(targetPort: number, oneWayMs: number): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const forward = (from: Socket, to: Socket) => {
    from.on('data', (chunk) => void setTimeout(() => to.write(chunk), oneWayMs));
    from.on('end', () => void setTimeout(() => to.end(), oneWayMs));
    from.on('error', () => to.destroy());
  };
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    }
    forward(client, upstream);
    forward(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      })
  };
}

/** `fetch` that counts requests. */
function countingFetch(counter: { requests: number }): FetchLike {
  return async (url, init) => {
    counter.requests++;
    return fetch(url, init);
  };
}

/** One transaction per request: the documentation example's loop, posting the transaction in shape B. */
function oneTransactionPerRequest(endpoint: string, token: string, doFetch: FetchLike): Connector {
  return {
    name: 'one transaction per request (docs example)',
    async uploadData(db: Db) {
      const transaction = await db.getNextCrudTransaction();
      if (!transaction) return;
      const response = await doFetch(endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
        body: JSON.stringify({ batch: transaction.crud.map((entry) => entry.toJSON()) })
      });
      if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
      await transaction.complete();
    }
  };
}

function uploader(endpoint: string, token: string, doFetch: FetchLike): Connector {
  const upload = new PowerSyncUploader({ endpoint, getToken: () => token, fetch: doFetch });
  return { name: 'PowerSyncUploader (50 per request)', uploadData: (db: Db) => upload.uploadData(db) };
}

interface Figures {
  name: string;
  requests: number;
  seconds: number;
  rows: number;
}

async function run(make: (endpoint: string, token: string, doFetch: FetchLike) => Connector): Promise<Figures> {
  const backend: Backend = await startBackend();
  const proxy = await delayProxy(Number(new URL(backend.url).port), RTT_MS / 2);
  const dir = mkdtempSync(join(tmpdir(), 'powersync-upload-drain-'));
  const db = new PowerSyncDatabase({
    schema: AppSchema,
    database: { dbFilename: 'client.sqlite', dbLocation: dir, implementation: { type: 'better-sqlite3' } }
  });
  try {
    await db.init();
    for (let i = 0; i < TRANSACTIONS; i++) {
      await db.execute('INSERT INTO lists (id, name, owner_id) VALUES (uuid(), ?, ?)', [`offline list ${i}`, USER_ID]);
    }
    const counter = { requests: 0 };
    const connector = make(`http://127.0.0.1:${proxy.port}/api/data`, backend.token(), countingFetch(counter));

    const started = performance.now();
    let calls = 0;
    while ((await db.getNextCrudTransaction()) !== null) {
      if (++calls > TRANSACTIONS * 2) throw new Error(`${connector.name}: the queue did not drain`);
      await connector.uploadData(db);
    }
    const seconds = (performance.now() - started) / 1000;

    const rows = Number(backend.rows('SELECT count(*) AS n FROM lists')[0].n);
    if (rows !== TRANSACTIONS) throw new Error(`${connector.name}: ${rows} rows on the server, expected ${TRANSACTIONS}`);
    return { name: connector.name, requests: counter.requests, seconds, rows };
  } finally {
    await db.close();
    await proxy.close();
    await backend.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  console.log(`queue drain: ${TRANSACTIONS} offline single-operation transactions, @powersync/node -> delay proxy (${RTT_MS} ms per round trip) -> serve (SQLite)`);
  const results: Figures[] = [];
  for (const make of [uploader, oneTransactionPerRequest]) {
    const figures = await run(make);
    results.push(figures);
    console.log(
      `  ${figures.name.padEnd(44)} ${String(figures.requests).padStart(5)} requests  ${figures.seconds.toFixed(2).padStart(7)} s drain  ` +
        `${((figures.seconds * 1000) / figures.requests).toFixed(0).padStart(4)} ms/request  ${figures.rows} rows on the server`
    );
  }
  const [ours, baseline] = results;
  console.log(
    `  ratio: ${(baseline.requests / ours.requests).toFixed(1)}x fewer requests, ${(baseline.seconds / ours.seconds).toFixed(1)}x shorter drain`
  );
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
