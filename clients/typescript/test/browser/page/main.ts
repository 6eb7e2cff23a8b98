/**
 * The browser test's page: a real @powersync/web database (wa-sqlite in a worker) writes rows in
 * transactions (one rejected by the server, one larger than the server's body cap), and PowerSyncUploader uploads its queue to `serve` on another origin. The test passes
 * `endpoint` and `token` in the query string and reads `window.uploadReport` when the page is done.
 * Nothing connects to a PowerSync Service: the page calls uploadData() itself until the queue is empty,
 * as the SDK's upload loop would.
 */
import { column, PowerSyncDatabase, Schema, Table } from '@powersync/web';

import { PowerSyncUploader, type FatalErrorResult } from '../../../src/connector.js';
import type { UploadReport } from '../report.js';

const schema = new Schema({
  lists: new Table({ name: column.text, owner_id: column.text, created_at: column.text }),
  todos: new Table({ list_id: column.text, owner_id: column.text, description: column.text, completed: column.integer })
});


declare global {
  interface Window {
    uploadReport?: UploadReport;
  }
}

const statusLine = document.getElementById('status') as HTMLElement;
const report = document.getElementById('report') as HTMLElement;

function show(rows: [string, string][]): void {
  const table = document.createElement('table');
  for (const [name, value] of rows) {
    const tr = table.insertRow();
    const th = document.createElement('th');
    th.textContent = name;
    tr.appendChild(th);
    tr.insertCell().textContent = value;
  }
  report.replaceChildren(table);
}

async function run(): Promise<UploadReport> {
  const params = new URLSearchParams(location.search);
  const endpoint = params.get('endpoint') ?? '';
  const token = params.get('token') ?? '';
  const owner = params.get('owner') ?? '';

  const db = new PowerSyncDatabase({ schema, database: { dbFilename: `browser-test-${crypto.randomUUID()}.db` } });
  await db.init();

  const list = crypto.randomUUID();
  const todos = [crypto.randomUUID(), crypto.randomUUID()];
  const rejectedList = crypto.randomUUID();
  const laterList = crypto.randomUUID();
  statusLine.textContent = 'writing';
  await db.writeTransaction(async (tx) => {
    await tx.execute('INSERT INTO lists (id, name, owner_id, created_at) VALUES (?, ?, ?, ?)', [list, 'Browser list', owner, '2026-12-01T10:00:00.000Z']);
    for (const [i, id] of todos.entries()) {
      await tx.execute('INSERT INTO todos (id, list_id, owner_id, description, completed) VALUES (?, ?, ?, ?, ?)', [id, list, owner, `todo ${i} ✓ ünïcødé`, 0]);
    }
  });
  await db.execute('UPDATE todos SET completed = 1 WHERE id = ?', [todos[0]]);
  // Rejected by the server: a list without a name (NOT NULL).
  await db.execute('INSERT INTO lists (id, name, owner_id) VALUES (?, NULL, ?)', [rejectedList, owner]);
  await db.execute('INSERT INTO lists (id, name, owner_id) VALUES (?, ?, ?)', [laterList, 'After the rejected one', owner]);
  // Larger than the body cap (the test runs serve with an 8 kB cap): answered fatal_error TOO_LARGE: 20 todos of 450 characters.
  const hugeTodos = Array.from({ length: 20 }, () => crypto.randomUUID());
  await db.writeTransaction(async (tx) => {
    for (const id of hugeTodos) {
      await tx.execute('INSERT INTO todos (id, list_id, owner_id, description, completed) VALUES (?, ?, ?, ?, ?)', [id, list, owner, 'x'.repeat(450), 0]);
    }
  });

  const rejected: UploadReport['rejected'] = [];
  const uploader = new PowerSyncUploader({
    endpoint,
    getToken: () => token,
    onRejected: (result: FatalErrorResult, transaction) => {
      rejected.push({
        code: result.failed_operation.error_code,
        table: result.failed_operation.details?.table,
        ops: [...new Set(transaction.crud.map((entry) => `${entry.op} ${entry.table}`))],
        operations: transaction.crud.length
      });
    }
  });

  statusLine.textContent = 'uploading';
  let uploadCalls = 0;
  while ((await db.getNextCrudTransaction()) !== null) {
    if (uploadCalls >= 10) throw new Error('the queue did not drain after 10 uploadData() calls');
    await uploader.uploadData(db);
    uploadCalls++;
  }
  const queued = (await db.get<{ n: number }>('SELECT count(*) AS n FROM ps_crud')).n;
  const clientId = await db.getClientId();
  await db.close();

  show([
    ['endpoint', endpoint],
    ['page origin', location.origin],
    ['uploadData() calls', String(uploadCalls)],
    ['operations still queued', String(queued)],
    ['rejected', rejected.map((r) => `${r.code} (${r.operations} × ${r.ops.join(', ')})`).join('; ')],
    ['client id', clientId]
  ]);
  return { ok: true, clientId, uploadCalls, queued, ids: { list, todos, rejectedList, laterList, hugeTodos }, rejected };
}

run().then(
  (result) => {
    statusLine.textContent = 'done: the queue drained';
    statusLine.className = 'done';
    window.uploadReport = result;
  },
  (error: unknown) => {
    statusLine.textContent = `failed: ${String(error)}`;
    statusLine.className = 'failed';
    window.uploadReport = { ok: false, error: error instanceof Error ? `${error.message}\n${error.stack}` : String(error) };
  }
);
