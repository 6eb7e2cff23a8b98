/**
 * The real PowerSync JS SDK (@powersync/node, no PowerSync Service: connect() is never called) writes
 * locally; PowerSyncUploader.uploadData() uploads its queue to the Python backend's `serve` over HTTP.
 * Checks: the queue drains, the server rows match, rejected transactions reach onRejected with their
 * error codes (and the errors table), a transaction rolls back as a whole, a request over the body cap
 * has its last transactions answered not_attempted and sent again, and a transaction larger than the
 * cap by itself reaches onRejected as the server's TOO_LARGE. `serve` runs with MAX_BODY_BYTES=8192 so
 * that a few todos make a request too large.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { column, PowerSyncDatabase, Schema, Table } from '@powersync/node';

import { PowerSyncUploader, UploadError, type CrudTransactionLike, type FatalErrorResult, type FetchLike } from '../src/connector.js';
import { closeAll, openClient, startBackend, USER_ID, type Backend } from './backend.js';

const AppSchema = new Schema({
  lists: new Table({ name: column.text, owner_id: column.text, created_at: column.text }),
  todos: new Table({
    list_id: column.text,
    owner_id: column.text,
    description: column.text,
    completed: column.integer,
    completed_at: column.text,
    priority: column.integer,
    amount: column.real,
    tags: column.text,
    created_at: column.text
  })
});

const MAX_BODY_BYTES = 8192;

interface Rejection {
  code: string;
  table: unknown;
  transactionId?: number;
  ops: string[];
}

describe('PowerSyncUploader with the real @powersync/node SDK against `serve`', () => {
  let backend: Backend;
  let db: InstanceType<typeof PowerSyncDatabase>;
  let dir: string;
  const rejected: Rejection[] = [];
  const bodies: { transactions: { crud: unknown[] }[]; client_id?: string }[] = [];
  const statuses: number[] = [];

  const countingFetch: FetchLike = async (url, init) => {
    bodies.push(JSON.parse(init.body));
    const response = await fetch(url, init);
    statuses.push(response.status);
    return response;
  };

  function uploader(extra: Partial<ConstructorParameters<typeof PowerSyncUploader>[0]> = {}): PowerSyncUploader {
    return new PowerSyncUploader({
      endpoint: backend.endpoint,
      getToken: () => backend.token(),
      fetch: countingFetch,
      onRejected: (result: FatalErrorResult, transaction: CrudTransactionLike) => {
        rejected.push({
          code: result.failed_operation.error_code,
          table: result.failed_operation.details?.table,
          transactionId: transaction.transactionId,
          ops: transaction.crud.map((e) => `${e.op} ${e.table}`)
        });
      },
      ...extra
    });
  }

  /** Calls uploadData(db) until the queue is empty, as the SDK's upload loop would. */
  async function drain(upload: PowerSyncUploader, maxCalls = 20): Promise<number> {
    let calls = 0;
    while ((await db.getNextCrudTransaction()) !== null) {
      assert.ok(calls < maxCalls, `the queue did not drain after ${maxCalls} uploadData() calls`);
      await upload.uploadData(db);
      calls++;
    }
    return calls;
  }


  before(async () => {
    backend = await startBackend({ MAX_BODY_BYTES: String(MAX_BODY_BYTES) });
    dir = mkdtempSync(join(tmpdir(), 'powersync-upload-sdk-'));
    db = await openClient(AppSchema, dir);
  });

  after(() => closeAll(db, backend, dir));

  const list1 = randomUUID();
  const todo1 = randomUUID();
  const todo2 = randomUUID();
  const now = '2024-05-01T10:00:00.000Z';

  it('uploads a transaction, an UPDATE and a DELETE, one transaction per request; the queue drains', async (t) => {
    await db.writeTransaction(async (tx) => {
      await tx.execute('INSERT INTO lists (id, name, owner_id, created_at) VALUES (?, ?, ?, ?)', [list1, 'Groceries', USER_ID, now]);
      await tx.execute(
        'INSERT INTO todos (id, list_id, owner_id, description, completed, priority, amount, tags, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [todo1, list1, USER_ID, 'milk', 0, 2, 3.25, JSON.stringify(['dairy', 'fresh']), now]
      );
      await tx.execute('INSERT INTO todos (id, list_id, owner_id, description, completed, created_at) VALUES (?, ?, ?, ?, ?, ?)', [
        todo2,
        list1,
        USER_ID,
        'bread',
        0,
        now
      ]);
    });
    await db.execute('UPDATE todos SET completed = 1, completed_at = ? WHERE id = ?', ['2024-05-01T11:30:00Z', todo1]);
    await db.execute('DELETE FROM todos WHERE id = ?', [todo2]);

    const before = bodies.length;
    try {
      const calls = await drain(uploader({ maxTransactionsPerRequest: 1 }));
      assert.equal(calls, 3);
    } catch (error) {
      t.diagnostic(backend.output());
      throw error;
    }
    assert.equal(await db.getNextCrudTransaction(), null);
    assert.deepEqual(
      bodies.slice(before).map((b) => b.transactions.map((x) => x.crud.length)),
      [[3], [1], [1]]
    );
    assert.equal(bodies[before].client_id, await db.getClientId());
    assert.deepEqual(rejected, []);

    assert.deepEqual(backend.rows('SELECT id, owner_id, name FROM lists'), [{ id: list1, owner_id: USER_ID, name: 'Groceries' }]);
    const todos = backend.rows('SELECT * FROM todos');
    assert.equal(todos.length, 1, 'todo 2 was deleted');
    const row = todos[0];
    assert.equal(row.id, todo1);
    assert.equal(row.list_id, list1);
    assert.equal(row.owner_id, USER_ID);
    assert.equal(row.description, 'milk');
    assert.equal(row.completed, 1);
    assert.equal(row.completed_at, '2024-05-01T11:30:00.000');
    assert.equal(row.priority, 2);
    assert.equal(Number(row.amount), 3.25);
    assert.deepEqual(JSON.parse(String(row.tags)), ['dairy', 'fresh']);
  });

  it('sends several transactions per request; rejected ones reach onRejected and do not block the queue', async (t) => {
    const goodTodoInBadTx = randomUUID();
    const namelessList = randomUUID();
    const orphan = randomUUID();
    const list2 = randomUUID();

    // Rejected as a whole: the todo is valid, but the list beside it has no name (NOT NULL).
    await db.writeTransaction(async (tx) => {
      await tx.execute('INSERT INTO todos (id, list_id, owner_id, description, completed) VALUES (?, ?, ?, ?, ?)', [
        goodTodoInBadTx,
        list1,
        USER_ID,
        'eggs',
        0
      ]);
      await tx.execute('INSERT INTO lists (id, name, owner_id) VALUES (?, NULL, ?)', [namelessList, USER_ID]);
    });
    // Rejected: its list does not exist on the server.
    await db.execute('INSERT INTO todos (id, list_id, owner_id, description, completed) VALUES (?, ?, ?, ?, ?)', [
      orphan,
      randomUUID(),
      USER_ID,
      'orphan',
      0
    ]);
    // Accepted, after the two rejected ones.
    await db.writeTransaction(async (tx) => {
      await tx.execute('INSERT INTO lists (id, name, owner_id) VALUES (?, ?, ?)', [list2, 'Work', USER_ID]);
      await tx.execute('UPDATE todos SET priority = 5 WHERE id = ?', [todo1]);
    });

    const before = bodies.length;
    try {
      assert.equal(await drain(uploader()), 1);
    } catch (error) {
      t.diagnostic(backend.output());
      throw error;
    }
    assert.equal(await db.getNextCrudTransaction(), null, 'the queue drained');
    assert.equal(bodies.length - before, 1);
    assert.deepEqual(
      bodies[before].transactions.map((x) => x.crud.length),
      [2, 1, 2]
    );

    assert.deepEqual(
      rejected.map((r) => [r.code, r.table, r.ops]),
      [
        ['NOT_NULL_VIOLATION', 'lists', ['PUT todos', 'PUT lists']],
        ['FOREIGN_KEY_VIOLATION', 'todos', ['PUT todos']]
      ]
    );

    assert.deepEqual(
      backend.rows('SELECT id, name FROM lists ORDER BY name').map((r) => r.name),
      ['Groceries', 'Work']
    );
    assert.deepEqual(backend.rows('SELECT id FROM todos WHERE id IN (?, ?)', goodTodoInBadTx, orphan), [], 'rejected transactions left nothing');
    assert.equal(backend.rows('SELECT priority FROM todos WHERE id = ?', todo1)[0].priority, 5);

    const errors = backend.rows('SELECT user_id, client_id, table_name, row_id, error_code FROM powersync_upload_errors ORDER BY error_code');
    const clientId = await db.getClientId();
    assert.deepEqual(errors, [
      { user_id: USER_ID, client_id: clientId, table_name: 'todos', row_id: orphan, error_code: 'FOREIGN_KEY_VIOLATION' },
      { user_id: USER_ID, client_id: clientId, table_name: 'lists', row_id: namelessList, error_code: 'NOT_NULL_VIOLATION' }
    ]);
  });

  it('401 from the server: refreshCredentials() is called, it throws, and nothing is completed', async () => {
    await db.execute('UPDATE todos SET description = ? WHERE id = ?', ['oat milk', todo1]);
    let refreshed = 0;
    const upload = uploader({ getToken: () => 'not-a-jwt', refreshCredentials: () => void refreshed++ });
    await assert.rejects(upload.uploadData(db), (error: unknown) => error instanceof UploadError && error.status === 401);
    assert.equal(refreshed, 1);
    assert.notEqual(await db.getNextCrudTransaction(), null, 'still queued');

    assert.equal(await drain(uploader()), 1);
    assert.equal(backend.rows('SELECT description FROM todos WHERE id = ?', todo1)[0].description, 'oat milk');
  });

  /** Writes `count` todos of about 450 bytes each in one client transaction. */
  async function writeTodos(listId: string, count: number, label: string): Promise<string[]> {
    const ids = Array.from({ length: count }, () => randomUUID());
    await db.writeTransaction(async (tx) => {
      for (const [i, id] of ids.entries()) {
        await tx.execute('INSERT INTO todos (id, list_id, owner_id, description, completed) VALUES (?, ?, ?, ?, ?)', [
          id,
          listId,
          USER_ID,
          `${label} ${i} `.padEnd(450, '.'),
          0
        ]);
      }
    });
    return ids;
  }

  it('a request over the body cap has its last transactions not attempted and sent again; everything uploads', async (t) => {
    // Given 12 transactions of 3 todos (about 1.5 kB each): about 18 kB, over serve's 8 kB cap
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push(...(await writeTodos(list1, 3, `split ${i}`)));
    const before = statuses.length;
    const rejectedBefore = rejected.length;

    // When the queue is drained
    try {
      await drain(uploader({ logger: { error: console.error, warn: () => undefined } }));
    } catch (error) {
      t.diagnostic(backend.output());
      throw error;
    }

    // Then every answer was a 200 (no 413: the transactions past the cap were not_attempted and sent
    // again in later requests), the queue drained, and every row is on the server
    assert.ok(statuses.slice(before).length > 1, `statuses: ${statuses.slice(before).join(' ')}`);
    assert.deepEqual(new Set(statuses.slice(before)), new Set([200]));
    assert.equal(await db.getNextCrudTransaction(), null);
    assert.equal(rejected.length, rejectedBefore);
    const placeholders = ids.map(() => '?').join(', ');
    assert.equal(backend.rows(`SELECT id FROM todos WHERE id IN (${placeholders})`, ...ids).length, 36);
  });

  it('a transaction larger than the body cap reaches onRejected as TOO_LARGE and the queue goes on', async (t) => {
    // Given a transaction of 30 todos (about 15 kB, over serve's 8 kB cap on its own), then a small one
    const hugeIds = await writeTodos(list1, 30, 'huge');
    const [after] = await writeTodos(list1, 1, 'after the huge one');
    const rejectedBefore = rejected.length;
    const errors: string[] = [];

    // When the queue is drained
    try {
      await drain(uploader({ logger: { error: (...args: unknown[]) => void errors.push(args.join(' ')), warn: () => undefined } }));
    } catch (error) {
      t.diagnostic(backend.output());
      throw error;
    }

    // Then the server answered the huge transaction fatal_error TOO_LARGE (a 200, no 413), it went to
    // onRejected, and the small one uploaded
    assert.deepEqual(
      rejected.slice(rejectedBefore).map((r) => [r.code, r.ops.length]),
      [['TOO_LARGE', 30]]
    );
    assert.deepEqual(errors, []);
    assert.equal(await db.getNextCrudTransaction(), null);
    assert.equal(backend.rows('SELECT id FROM todos WHERE id = ?', after).length, 1);
    assert.equal(backend.rows(`SELECT id FROM todos WHERE id IN (${hugeIds.map(() => '?').join(', ')})`, ...hugeIds).length, 0);
  });
});
