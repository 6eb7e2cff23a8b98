/**
 * A connector written the way PowerSync's reference write API tells app developers to write one
 * (shape A, one transaction per request by default, `op_data` only: no previous values, no `op_id`,
 * no `client_id`; it knows 200, 400 and 401 and throws on anything else, so the SDK sends the same
 * transaction again), and this package's PowerSyncUploader, both with the real @powersync/node SDK
 * against `serve`. One test per point of issue 19:
 *
 * 1. tables with deltas, `detect: version` or `detect: previous_values`: the reference connector's
 *    PATCH is rejected saying the connector sent no previous values (or applied unchecked with the
 *    warning CONFLICT_UNCHECKED under `missing_previous: apply`); ours sends them and is checked;
 * 2. one transaction over MAX_BODY_BYTES is answered fatal_error TOO_LARGE (200), so the reference
 *    connector completes it instead of retrying it for ever;
 * 3. a 503 body has a `message`, which the reference connector's error shows;
 * 4. without client_id/op_id a resend after a lost response is applied again (a second errors-table
 *    row); ours, with them, is answered from the ledger;
 * 5. `max_transactions` below the connector's batch size: the rest are not_attempted (200), not 400;
 * 6. every fatal result carries `status` and `requires_client_handling` (the reference connector
 *    refuses a result without them);
 * and an entry whose id is a JSON number fails only its own transaction.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { column, PowerSyncDatabase, Schema, Table, type CrudTransaction } from '@powersync/node';
import Database from 'better-sqlite3';

import { PowerSyncUploader, type FatalErrorResult, type FetchLike } from '../src/connector.js';
import { closeAll, openClient, recordingFetch, startBackend, USER_ID, type Backend } from './backend.js';

const AppSchema = new Schema({
  lists: new Table({ name: column.text, owner_id: column.text }),
  todos: new Table({ list_id: column.text, owner_id: column.text, description: column.text }),
  stock: new Table({ owner_id: column.text, quantity: column.integer }, { trackPrevious: true }),
  notes: new Table({ owner_id: column.text, body: column.text, version: column.integer }, { trackPrevious: true }),
  labels: new Table({ owner_id: column.text, label: column.text }, { trackPrevious: true })
});

/** Tables the demo database lacks, created on the server before its first upload. */
const SERVER_TABLES = `
CREATE TABLE stock (id TEXT PRIMARY KEY, owner_id TEXT NOT NULL, quantity INTEGER NOT NULL DEFAULT 0);
CREATE TABLE notes (id TEXT PRIMARY KEY, owner_id TEXT NOT NULL, body TEXT, version INTEGER NOT NULL DEFAULT 1);
CREATE TABLE labels (id TEXT PRIMARY KEY, owner_id TEXT NOT NULL, label TEXT);
`;

const CONFIG = `
max_transactions: 2
tables:
  lists: {owner: owner_id}
  todos: {owner: owner_id, parents: {list_id: lists}}
  stock: {owner: owner_id, deltas: [quantity]}
  notes:
    owner: owner_id
    conflicts: {detect: version, version_column: version}
  labels:
    owner: owner_id
    conflicts: {detect: previous_values, missing_previous: apply}
`;

const MAX_BODY_BYTES = 8192;

// ---- the reference way ---------------------------------------------------------------------------

interface ApiResult {
  status: string;
  message?: string;
  requires_client_handling?: boolean;
  failed_operation?: { error_code: string; message?: string; operation_index?: number; details?: Record<string, unknown> };
  warnings?: { operation_index?: number; code: string; details?: Record<string, unknown> }[];
}

/**
 * An upload function as the reference write API's example connector shapes it: up to
 * `maxTransactions` whole transactions (1 by default), each entry `{id, op, table, transaction_id?,
 * op_data?}`; a non-2xx answer throws `Failed to post transaction batch (<status>): <message>`; a 200
 * completes the leading run of `success` and `fatal_error` results whose `requires_client_handling`
 * is false (a result without that boolean is malformed), and stops at anything else.
 */
class ReferenceWayConnector {
  constructor(
    private readonly endpoint: string,
    private readonly token: () => string,
    private readonly maxTransactions = 1,
    private readonly fetchImpl: FetchLike = fetch as unknown as FetchLike
  ) {}

  async uploadData(db: PowerSyncDatabase): Promise<void> {
    const batch: CrudTransaction[] = [];
    for await (const transaction of db.getCrudTransactions()) {
      batch.push(transaction);
      if (batch.length >= this.maxTransactions) break;
    }
    if (batch.length === 0) return;
    const body = {
      transactions: batch.map((transaction) => ({
        crud: transaction.crud.map((entry) => ({
          id: entry.id,
          op: entry.op,
          table: entry.table,
          ...(entry.transactionId != null && { transaction_id: entry.transactionId }),
          ...(entry.opData != null && { op_data: entry.opData })
        })),
        ...(transaction.transactionId != null && { transaction_id: transaction.transactionId })
      }))
    };
    const response = await this.fetchImpl(this.endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json', Authorization: `Bearer ${this.token()}` },
      body: JSON.stringify(body)
    });
    const text = await response.text();
    if (!(response.status >= 200 && response.status < 300)) {
      const { message } = JSON.parse(text || '{}') as { message?: string };
      throw new Error(`Failed to post transaction batch (${response.status}): ${message}`);
    }
    const results = (JSON.parse(text) as { results: ApiResult[] }).results;
    if (!Array.isArray(results) || results.length !== batch.length) throw new Error('Invalid batch result count');
    let accepted = -1;
    for (const [index, result] of results.entries()) {
      if (result.status === 'fatal_error') {
        if (typeof result.requires_client_handling !== 'boolean' || !result.failed_operation) {
          throw new Error('Malformed fatal transaction result');
        }
        if (result.requires_client_handling) break;
      } else if (result.status !== 'success') {
        break;
      }
      accepted = index;
    }
    if (accepted >= 0) await batch[accepted].complete();
  }
}

// ---- the tests ----------------------------------------------------------------------------------

describe('a connector written the reference way, and ours, with the real @powersync/node SDK against `serve`', () => {
  let backend: Backend;
  let db: InstanceType<typeof PowerSyncDatabase>;
  let dir: string;
  const answers: { status: number; body: { message?: string; results?: ApiResult[] } }[] = [];
  const rejected: FatalErrorResult[] = [];
  const recording = recordingFetch(answers);
  const recordingFetchImpl = recording.fetch;

  const reference = (maxTransactions = 1) =>
    new ReferenceWayConnector(backend.endpoint, () => backend.token(), maxTransactions, recordingFetchImpl);
  const ours = () =>
    new PowerSyncUploader({
      endpoint: backend.endpoint,
      getToken: () => backend.token(),
      fetch: recordingFetchImpl,
      onRejected: (result: FatalErrorResult) => void rejected.push(result),
      logger: { error: () => undefined, warn: () => undefined }
    });

  async function drain(upload: () => Promise<void>, maxCalls = 20): Promise<number> {
    let calls = 0;
    while ((await db.getNextCrudTransaction()) !== null) {
      assert.ok(calls < maxCalls, `the queue did not drain after ${maxCalls} uploadData() calls`);
      await upload();
      calls++;
    }
    return calls;
  }

  /** Runs statements on the server's database, as an admin or another device would. */
  function onServer(sql: string, ...params: unknown[]): void {
    const server = new Database(backend.databasePath);
    try {
      if (params.length === 0) server.exec(sql);
      else server.prepare(sql).run(...params);
    } finally {
      server.close();
    }
  }

  /** Inserts rows on the device and uploads them with our connector (the starting point of a test). */
  async function seed(table: string, id: string, values: Record<string, unknown>): Promise<void> {
    const names = Object.keys(values);
    await db.execute(
      `INSERT INTO ${table} (id, ${names.join(', ')}) VALUES (?, ${names.map(() => '?').join(', ')})`,
      [id, ...Object.values(values)]
    );
    await drain(() => ours().uploadData(db));
  }

  const lastResult = (): ApiResult => answers.at(-1)!.body.results![0];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'powersync-upload-reference-'));
    const config = join(dir, 'upload.yaml');
    writeFileSync(config, CONFIG);
    backend = await startBackend({ UPLOAD_CONFIG: config, MAX_BODY_BYTES: String(MAX_BODY_BYTES), DEADLINE_S: '3' });
    onServer(SERVER_TABLES);
    db = await openClient(AppSchema, dir);
  });

  after(() => closeAll(db, backend, dir));

  it('1. a delta or version PATCH without previous values is rejected saying so; ours is applied checked', async () => {
    // Given a stock count of 10 and a note at version 1, uploaded, then another device sells 2
    const item = randomUUID();
    const note = randomUUID();
    await seed('stock', item, { owner_id: USER_ID, quantity: 10 });
    await seed('notes', note, { owner_id: USER_ID, body: 'hello', version: 1 });
    onServer('UPDATE stock SET quantity = 8 WHERE id = ?', item);

    // When this device sells 1 (10 -> 9) and edits the note, uploaded the reference way
    await db.execute('UPDATE stock SET quantity = 9 WHERE id = ?', [item]);
    await db.execute('UPDATE notes SET body = ? WHERE id = ?', ['edited', note]);
    await drain(() => reference().uploadData(db));

    // Then both are fatal INVALID_DATA needs_previous_value whose message says no previous values
    // were sent and how to fix it (completed: the device reverts them), and the server is unchanged
    const fatal = answers.slice(-2).map((a) => a.body.results![0]);
    for (const result of fatal) {
      assert.equal(result.status, 'fatal_error');
      assert.equal(result.requires_client_handling, false);
      assert.equal(result.failed_operation!.details!.reason, 'needs_previous_value');
      assert.match(result.message!, /the connector sent no previous values.*missing_previous: apply/);
    }
    assert.deepEqual(backend.rows('SELECT quantity FROM stock WHERE id = ?', item), [{ quantity: 8 }]);

    // When the device (still showing 9 and its edit: no PowerSync Service here to revert them) sells
    // one more and edits the note again, uploaded by our connector (previous values, op_id, client_id)
    await db.execute('UPDATE stock SET quantity = 8 WHERE id = ?', [item]);
    await db.execute('UPDATE notes SET body = ? WHERE id = ?', ['edited again', note]);
    await drain(() => ours().uploadData(db));

    // Then the sale counts as a delta (8 + (8 - 9) = 7) and the note's version check passes (1 -> 2)
    assert.deepEqual(backend.rows('SELECT quantity FROM stock WHERE id = ?', item), [{ quantity: 7 }]);
    assert.deepEqual(backend.rows('SELECT body, version FROM notes WHERE id = ?', note), [{ body: 'edited again', version: 2 }]);
  });

  it('1. with missing_previous: apply, the reference PATCH is applied unchecked with CONFLICT_UNCHECKED', async () => {
    // Given a label uploaded, then changed on the server
    const label = randomUUID();
    await seed('labels', label, { owner_id: USER_ID, label: 'red' });
    onServer('UPDATE labels SET label = ? WHERE id = ?', 'blue (server)', label);

    // When the device's edit is uploaded the reference way (no previous values)
    await db.execute('UPDATE labels SET label = ? WHERE id = ?', ['green', label]);
    await drain(() => reference().uploadData(db));

    // Then it commits (last write wins) with a warning the app can read
    assert.deepEqual(lastResult(), {
      status: 'success',
      warnings: [{ operation_index: 0, code: 'CONFLICT_UNCHECKED', details: { table: 'labels', column: 'label' } }]
    });
    assert.deepEqual(backend.rows('SELECT label FROM labels WHERE id = ?', label), [{ label: 'green' }]);
  });

  it('2. one transaction over MAX_BODY_BYTES is fatal TOO_LARGE (200): completed, and the queue goes on', async () => {
    // Given a list, one transaction of 30 todos (about 15 kB, over the 8 kB cap alone), then one more
    const list = randomUUID();
    await seed('lists', list, { owner_id: USER_ID, name: 'big' });
    await db.writeTransaction(async (tx) => {
      for (let i = 0; i < 30; i++) {
        const text = `todo ${i} `.padEnd(450, '.');
        await tx.execute('INSERT INTO todos (id, list_id, owner_id, description) VALUES (?, ?, ?, ?)', [randomUUID(), list, USER_ID, text]);
      }
    });
    const small = randomUUID();
    await db.execute('INSERT INTO todos (id, list_id, owner_id, description) VALUES (?, ?, ?, ?)', [small, list, USER_ID, 'small']);
    const before = answers.length;

    // When the queue is drained the reference way
    await drain(() => reference().uploadData(db));

    // Then the big one was answered 200 fatal_error TOO_LARGE (no 413 to retry for ever), the small one uploaded
    assert.deepEqual(
      answers.slice(before).map((a) => [a.status, a.body.results![0].failed_operation?.error_code ?? a.body.results![0].status]),
      [
        [200, 'TOO_LARGE'],
        [200, 'success']
      ]
    );
    assert.equal(backend.rows('SELECT id FROM todos WHERE list_id = ?', list).length, 1);
  });

  it('3. a 503 carries a message, which the reference connector shows; the transaction stays queued', async () => {
    // Given the server's database locked by someone else for longer than the request's deadline
    const list = randomUUID();
    await db.execute('INSERT INTO lists (id, name, owner_id) VALUES (?, ?, ?)', [list, 'during an outage', USER_ID]);
    const locker = new Database(backend.databasePath);
    locker.exec('BEGIN EXCLUSIVE');
    let error: unknown;
    try {
      // When it is uploaded the reference way
      await reference().uploadData(db);
    } catch (caught) {
      error = caught;
    } finally {
      locker.exec('ROLLBACK');
      locker.close();
    }

    // Then the connector's error names the 503 and the server's message (not "undefined"), the body
    // also holds one result per transaction, and the transaction is still queued, then uploads
    assert.ok(error instanceof Error);
    assert.match(error.message, /^Failed to post transaction batch \(503\): temporary/);
    assert.equal(answers.at(-1)!.body.results!.length, 1);
    assert.notEqual(await db.getNextCrudTransaction(), null);
    await drain(() => reference().uploadData(db));
    assert.equal(backend.rows('SELECT id FROM lists WHERE id = ?', list).length, 1);
  });

  it('4. without client_id a resend after a lost response is applied again; ours is exactly once', async () => {
    // Given a todo whose list does not exist (a fatal FOREIGN_KEY_VIOLATION, recorded in the errors table)
    const orphanA = randomUUID();
    const orphanB = randomUUID();
    const missingList = randomUUID();
    const insertOrphan = (id: string) =>
      db.execute('INSERT INTO todos (id, list_id, owner_id, description) VALUES (?, ?, ?, ?)', [id, missingList, USER_ID, 'orphan']);
    const errorRows = (id: string) => backend.rows('SELECT id FROM powersync_upload_errors WHERE row_id = ?', id).length;

    // When the reference connector's first response is lost after the server answered, and it sends again
    await insertOrphan(orphanA);
    recording.loseNext();
    await assert.rejects(reference().uploadData(db), /connection dropped/);
    await drain(() => reference().uploadData(db));
    // Then the server decided it twice: two errors-table rows (no client_id, no ledger)
    assert.equal(errorRows(orphanA), 2);

    // When our connector (client_id and op_id) meets the same lost response
    await insertOrphan(orphanB);
    recording.loseNext();
    await assert.rejects(ours().uploadData(db), /connection dropped|failed/);
    await drain(() => ours().uploadData(db));
    // Then the resend was answered from the ledger: one errors-table row, the same fatal result
    assert.equal(errorRows(orphanB), 1);
    assert.equal(rejected.at(-1)!.failed_operation.error_code, 'FOREIGN_KEY_VIOLATION');
  });

  it('5. max_transactions below the batch size: the rest are not_attempted (200, never 400) and sent again', async () => {
    // Given five transactions and a reference connector sending up to 5 per request (the server caps at 2)
    const ids = Array.from({ length: 5 }, () => randomUUID());
    for (const id of ids) await db.execute('INSERT INTO lists (id, name, owner_id) VALUES (?, ?, ?)', [id, `list ${id}`, USER_ID]);
    const before = answers.length;

    // When the queue is drained
    const calls = await drain(() => reference(5).uploadData(db));

    // Then every answer was a 200 (2 applied, 3 not_attempted, then 2 + 1...), and all five lists are there
    const seen = answers.slice(before);
    assert.deepEqual(new Set(seen.map((a) => a.status)), new Set([200]));
    assert.deepEqual(seen[0].body.results!.map((r) => r.status), ['success', 'success', 'not_attempted', 'not_attempted', 'not_attempted']);
    assert.equal(calls, 3);
    const placeholders = ids.map(() => '?').join(', ');
    assert.equal(backend.rows(`SELECT id FROM lists WHERE id IN (${placeholders})`, ...ids).length, 5);
  });

  it('6. every fatal result carries status and requires_client_handling; a numeric id fails only its transaction', async () => {
    // Given an entry whose id is a JSON number (what powersync.dart issue 137 reports) and a valid one,
    // sent as the reference connector's body would carry them
    const valid = randomUUID();
    const response = await recordingFetchImpl(backend.endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json', Authorization: `Bearer ${backend.token()}` },
      body: JSON.stringify({
        transactions: [
          { crud: [{ id: 3479, op: 'PUT', table: 'lists', op_data: { name: 'numeric id', owner_id: USER_ID } }] },
          { crud: [{ id: valid, op: 'PUT', table: 'lists', op_data: { name: 'after it', owner_id: USER_ID } }] }
        ]
      })
    });

    // Then the answer is a 200: INVALID_DATA (details.field id) for the first, success for the second
    assert.equal(response.status, 200);
    const [first, second] = answers.at(-1)!.body.results!;
    assert.equal(first.status, 'fatal_error');
    assert.equal(first.requires_client_handling, false);
    assert.deepEqual([first.failed_operation!.error_code, first.failed_operation!.details!.field], ['INVALID_DATA', 'id']);
    assert.equal(second.status, 'success');
    assert.equal(backend.rows('SELECT id FROM lists WHERE id = ?', valid).length, 1);
  });
});
