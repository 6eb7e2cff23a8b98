/**
 * Conflicts and exactly-once replays with the real PowerSync JS SDK (@powersync/node) against `serve`
 * (no PowerSync Service). The todos table tracks previous values (`trackPrevious`), and the server's
 * configuration turns on `detect: previous_values` for it. Checks: a change made on the server after
 * the device last synced makes the device's offline edit a CONFLICT that reaches onRejected (and the
 * conflicts table); a response lost after COMMIT is answered ALREADY_APPLIED on the resend, and the
 * newer change another device made in between survives.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { column, PowerSyncDatabase, Schema, Table } from '@powersync/node';
import Database from 'better-sqlite3';

import { PowerSyncUploader, type FatalErrorResult } from '../src/connector.js';
import { closeAll, openClient, recordingFetch, startBackend, USER_ID, type Backend } from './backend.js';

const AppSchema = new Schema({
  lists: new Table({ name: column.text, owner_id: column.text }),
  todos: new Table(
    { list_id: column.text, owner_id: column.text, description: column.text, completed: column.integer },
    { trackPrevious: { onlyWhenChanged: true } }
  )
});

const CONFIG = `
tables:
  lists:
    owner: owner_id
  todos:
    owner: owner_id
    parents: {list_id: lists}
    columns: [description, completed]
    conflicts: {detect: previous_values, on_conflict: reject}
`;

describe('conflicts and replays with the real @powersync/node SDK against `serve`', () => {
  let backend: Backend;
  let db: InstanceType<typeof PowerSyncDatabase>;
  let dir: string;
  const rejected: FatalErrorResult[] = [];
  const answers: { status: number; body: { results?: { status: string; warnings?: { code: string }[] }[] } }[] = [];
  const flaky = recordingFetch(answers);

  const uploader = () =>
    new PowerSyncUploader({
      endpoint: backend.endpoint,
      getToken: () => backend.token(),
      fetch: flaky.fetch,
      onRejected: (result: FatalErrorResult) => void rejected.push(result),
      logger: { error: () => undefined, warn: () => undefined }
    });

  /** Runs a statement on the server's database, as another device or an admin would. */
  function onServer(sql: string, ...params: unknown[]): void {
    const server = new Database(backend.databasePath);
    try {
      server.prepare(sql).run(...params);
    } finally {
      server.close();
    }
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'powersync-upload-conflicts-'));
    const config = join(dir, 'upload.yaml');
    writeFileSync(config, CONFIG);
    backend = await startBackend({ UPLOAD_CONFIG: config });
    db = await openClient(AppSchema, dir);
  });

  after(() => closeAll(db, backend, dir));

  const list = randomUUID();
  const todo = randomUUID();

  it('an offline edit of a value changed on the server meanwhile is a CONFLICT that reaches onRejected', async (t) => {
    // Given a todo uploaded from the device, then renamed on the server
    await db.writeTransaction(async (tx) => {
      await tx.execute('INSERT INTO lists (id, name, owner_id) VALUES (?, ?, ?)', [list, 'Groceries', USER_ID]);
      await tx.execute('INSERT INTO todos (id, list_id, owner_id, description, completed) VALUES (?, ?, ?, ?, ?)', [
        todo,
        list,
        USER_ID,
        'milk',
        0
      ]);
    });
    await uploader().uploadData(db);
    onServer('UPDATE todos SET description = ? WHERE id = ?', 'oat milk (server)', todo);

    // When the device, which still shows "milk", edits it and uploads (the CrudEntry carries old values)
    await db.execute('UPDATE todos SET description = ? WHERE id = ?', ['whole milk', todo]);
    try {
      await uploader().uploadData(db);
    } catch (error) {
      t.diagnostic(backend.output());
      throw error;
    }

    // Then the edit is rejected as a stale CONFLICT, completed, recorded for the app; the server keeps its value
    assert.equal(rejected.length, 1);
    const failed = rejected[0].failed_operation;
    assert.equal(failed.error_code, 'CONFLICT');
    assert.equal(failed.details?.reason, 'stale');
    assert.equal(failed.details?.column, 'description');
    assert.equal(await db.getNextCrudTransaction(), null);
    assert.equal(backend.rows('SELECT description FROM todos WHERE id = ?', todo)[0].description, 'oat milk (server)');
    const conflicts = backend.rows('SELECT id, reason, client_values, server_values FROM powersync_upload_conflicts');
    assert.deepEqual(
      conflicts.map((c) => [c.id, c.reason, JSON.parse(String(c.client_values)), JSON.parse(String(c.server_values))]),
      [[failed.details?.conflict_id, 'stale', { description: 'whole milk' }, { description: 'oat milk (server)' }]]
    );
  });

  it('a resend after a response lost past COMMIT is ALREADY_APPLIED and keeps a newer change from another device', async () => {
    // Given the device marks the todo completed, and the server's answer is lost on the way back
    await db.execute('UPDATE todos SET completed = 1 WHERE id = ?', [todo]);
    flaky.loseNext();
    await assert.rejects(uploader().uploadData(db));
    assert.notEqual(await db.getNextCrudTransaction(), null, 'still queued: the device never saw the answer');
    assert.equal(backend.rows('SELECT completed FROM todos WHERE id = ?', todo)[0].completed, 1, 'committed on the server');

    // And another device then reopens it
    onServer('UPDATE todos SET completed = 0 WHERE id = ?', todo);

    // When the SDK sends the same transaction again
    await uploader().uploadData(db);

    // Then it is answered from the ledger, not applied again: the other device's change survives
    const last = answers.at(-1);
    assert.equal(last?.status, 200);
    assert.deepEqual(last?.body.results, [{ status: 'success', warnings: [{ code: 'ALREADY_APPLIED' }] }]);
    assert.equal(await db.getNextCrudTransaction(), null);
    assert.equal(backend.rows('SELECT completed FROM todos WHERE id = ?', todo)[0].completed, 0);
    assert.equal(rejected.length, 1, 'nothing more was rejected');
  });
});
