/**
 * PowerSyncUploader against a stub fetch and a fake queue whose complete() has the SDK's semantics:
 * completing a transaction removes it and every earlier one.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  PowerSyncUploader,
  UploadError,
  type CrudTransactionLike,
  type FatalErrorResult,
  type FetchLike,
  type Logger,
  type ResponseLike,
  type TransactionResult,
  type UploaderOptions
} from '../src/connector.js';

class FakeQueue {
  transactions: CrudTransactionLike[] = [];
  completeCalls: number[] = [];
  private nextOpId = 1;

  constructor(
    sizes: number[],
    readonly withIterator = true
  ) {
    sizes.forEach((size, index) => this.add(size, index + 1));
  }

  add(size: number, txId: number, opData: Record<string, unknown> = { name: 'x' }): void {
    const crud = Array.from({ length: size }, () => {
      const opId = this.nextOpId++;
      return { clientId: opId, op: 'PUT', table: 'lists', id: `row-${opId}`, opData, transactionId: txId };
    });
    const transaction: CrudTransactionLike = {
      crud,
      transactionId: txId,
      complete: async () => {
        this.completeCalls.push(txId);
        const index = this.transactions.indexOf(transaction);
        assert.ok(index >= 0, `transaction ${txId} completed twice`);
        this.transactions.splice(0, index + 1);
      }
    };
    this.transactions.push(transaction);
  }

  get remaining(): (number | undefined)[] {
    return this.transactions.map((t) => t.transactionId);
  }

  async getNextCrudTransaction(): Promise<CrudTransactionLike | null> {
    return this.transactions[0] ?? null;
  }

  async getClientId(): Promise<string> {
    return 'client-1';
  }

  get db() {
    const snapshot = () => [...this.transactions];
    return {
      getNextCrudTransaction: () => this.getNextCrudTransaction(),
      getClientId: () => this.getClientId(),
      ...(this.withIterator
        ? {
            getCrudTransactions: () => ({
              async *[Symbol.asyncIterator]() {
                yield* snapshot();
              }
            })
          }
        : {})
    };
  }
}

interface Call {
  url: string;
  headers: Record<string, string>;
  body: { transactions: { transaction_id?: number; crud: Record<string, unknown>[] }[]; client_id?: string };
}

function stubFetch(status: number, body: unknown, headers: Record<string, string> = {}): { fetch: FetchLike; calls: Call[] } {
  const calls: Call[] = [];
  const fetch: FetchLike = async (url, init) => {
    calls.push({ url, headers: init.headers, body: JSON.parse(init.body) });
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    const response: ResponseLike = {
      status,
      headers: { get: (name: string) => headers[name] ?? headers[name.toLowerCase()] ?? null },
      text: async () => text
    };
    return response;
  };
  return { fetch, calls };
}

/** A fetch that answers 413 to bodies over `capBytes` and `success` for every transaction otherwise. */
function cappedFetch(capBytes: number): { fetch: FetchLike; calls: Call[] } {
  const calls: Call[] = [];
  const fetch: FetchLike = async (url, init) => {
    const body = JSON.parse(init.body) as Call['body'];
    calls.push({ url, headers: init.headers, body });
    const tooLarge = Buffer.byteLength(init.body) > capBytes;
    const text = tooLarge ? JSON.stringify({ message: `body over ${capBytes} bytes` }) : JSON.stringify(results(...body.transactions.map(() => success)));
    return { status: tooLarge ? 413 : 200, headers: { get: () => null }, text: async () => text };
  };
  return { fetch, calls };
}

function results(...items: TransactionResult[]) {
  return { results: items };
}
const success: TransactionResult = { status: 'success' };
const retryable: TransactionResult = { status: 'retryable_error', message: 'deadlock', retry_after_ms: 0 };
const notAttempted: TransactionResult = { status: 'not_attempted' };
function fatal(code: string): FatalErrorResult {
  return {
    status: 'fatal_error',
    requires_client_handling: false,
    message: `rejected: ${code}`,
    failed_operation: { error_code: code, message: code, operation_index: 0, details: { table: 'lists' } }
  };
}

function recordingLogger(): Logger & { errors: string[] } {
  const errors: string[] = [];
  return { errors, error: (...args: unknown[]) => void errors.push(args.map(String).join(' ')), warn: () => undefined };
}

function make(fetch: FetchLike, extra: Partial<UploaderOptions> = {}): PowerSyncUploader {
  return new PowerSyncUploader({ endpoint: 'https://api.example/api/data', getToken: () => 'tok', fetch, ...extra });
}

describe('PowerSyncUploader (stub fetch)', () => {
  it('sends whole transactions in shape A with the bearer token and client id', async () => {
    const queue = new FakeQueue([2, 1]);
    const { fetch, calls } = stubFetch(200, results(success, success));
    await make(fetch).uploadData(queue.db);
    assert.equal(calls.length, 1);
    assert.equal(calls[0].url, 'https://api.example/api/data');
    assert.equal(calls[0].headers.Authorization, 'Bearer tok');
    assert.equal(calls[0].headers['Content-Type'], 'application/json');
    assert.deepEqual(calls[0].body, {
      client_id: 'client-1',
      transactions: [
        {
          transaction_id: 1,
          crud: [
            { op_id: 1, op: 'PUT', table: 'lists', id: 'row-1', op_data: { name: 'x' } },
            { op_id: 2, op: 'PUT', table: 'lists', id: 'row-2', op_data: { name: 'x' } }
          ]
        },
        { transaction_id: 2, crud: [{ op_id: 3, op: 'PUT', table: 'lists', id: 'row-3', op_data: { name: 'x' } }] }
      ]
    });
    assert.deepEqual(queue.completeCalls, [2], 'only the last transaction is completed (it completes the earlier ones)');
    assert.deepEqual(queue.remaining, []);
  });

  it('empty queue: no request', async () => {
    const { fetch, calls } = stubFetch(200, results());
    await make(fetch).uploadData(new FakeQueue([]).db);
    assert.equal(calls.length, 0);
  });

  it('503 with Retry-After: 1 waits at least 1 s, then throws without completing', async () => {
    const queue = new FakeQueue([1, 1]);
    const { fetch } = stubFetch(503, results(retryable, notAttempted), { 'Retry-After': '1' });
    const started = performance.now();
    await assert.rejects(make(fetch).uploadData(queue.db), (error: unknown) => {
      assert.ok(error instanceof UploadError);
      assert.equal(error.status, 503);
      assert.equal(error.waitedMs, 1000);
      return true;
    });
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 990, `waited ${elapsed.toFixed(0)} ms`);
    assert.deepEqual(queue.completeCalls, []);
    assert.deepEqual(queue.remaining, [1, 2]);
  });

  it('Retry-After is capped by maxRetryAfterMs', async () => {
    const queue = new FakeQueue([1]);
    const { fetch } = stubFetch(503, '', { 'Retry-After': '3600' });
    const started = performance.now();
    await assert.rejects(make(fetch, { maxRetryAfterMs: 50 }).uploadData(queue.db), UploadError);
    assert.ok(performance.now() - started < 1000);
    assert.deepEqual(queue.remaining, [1]);
  });

  it('200 [success, retryable_error, not_attempted]: completes only the first, then throws', async () => {
    const queue = new FakeQueue([1, 2, 1]);
    const { fetch } = stubFetch(200, results(success, retryable, notAttempted));
    const rejected: unknown[] = [];
    await assert.rejects(make(fetch, { onRejected: (r) => void rejected.push(r) }).uploadData(queue.db), UploadError);
    assert.deepEqual(queue.completeCalls, [1]);
    assert.deepEqual(queue.remaining, [2, 3]);
    assert.deepEqual(rejected, []);
  });

  it('200 [retryable_error, not_attempted]: waits retry_after_ms, completes nothing, throws', async () => {
    const queue = new FakeQueue([1, 1]);
    const { fetch } = stubFetch(200, results({ status: 'retryable_error', message: 'lock timeout', retry_after_ms: 200 }, notAttempted));
    const started = performance.now();
    await assert.rejects(make(fetch).uploadData(queue.db), (error: unknown) => error instanceof UploadError && error.waitedMs === 200);
    assert.ok(performance.now() - started >= 190);
    assert.deepEqual(queue.completeCalls, []);
  });

  it('200 [success, fatal_error, success]: completes all three; onRejected gets the fatal one with its transaction', async () => {
    const queue = new FakeQueue([1, 1, 1]);
    const { fetch } = stubFetch(200, results(success, fatal('NOT_NULL_VIOLATION'), success));
    const rejected: [string, number | undefined][] = [];
    await make(fetch, {
      onRejected: (result, transaction) => void rejected.push([result.failed_operation.error_code, transaction.transactionId])
    }).uploadData(queue.db);
    assert.deepEqual(rejected, [['NOT_NULL_VIOLATION', 2]]);
    assert.deepEqual(queue.completeCalls, [3]);
    assert.deepEqual(queue.remaining, []);
  });

  it('200 [fatal_error, not_attempted] (on_fatal_error: stop): completes the fatal one and returns so the SDK goes on at once', async () => {
    const queue = new FakeQueue([1, 1]);
    const { fetch } = stubFetch(200, results(fatal('UNIQUE_VIOLATION'), notAttempted));
    const rejected: string[] = [];
    await make(fetch, { onRejected: (r) => void rejected.push(r.failed_operation.error_code) }).uploadData(queue.db);
    assert.deepEqual(rejected, ['UNIQUE_VIOLATION']);
    assert.deepEqual(queue.remaining, [2]);
  });

  it('200 [not_attempted]: nothing completed, throws', async () => {
    const queue = new FakeQueue([1]);
    const { fetch } = stubFetch(200, results(notAttempted));
    await assert.rejects(make(fetch).uploadData(queue.db), UploadError);
    assert.deepEqual(queue.remaining, [1]);
  });

  it('an onRejected that throws is logged and does not block the queue', async () => {
    const queue = new FakeQueue([1]);
    const { fetch } = stubFetch(200, results(fatal('CHECK_VIOLATION')));
    const logger = recordingLogger();
    await make(fetch, {
      logger,
      onRejected: () => {
        throw new Error('app bug');
      }
    }).uploadData(queue.db);
    assert.deepEqual(queue.remaining, []);
    assert.equal(logger.errors.length, 1);
  });

  it('401: calls refreshCredentials() then throws, nothing completed', async () => {
    const queue = new FakeQueue([1]);
    const { fetch } = stubFetch(401, { message: 'token expired' });
    let refreshed = 0;
    await assert.rejects(
      make(fetch, { refreshCredentials: async () => void refreshed++ }).uploadData(queue.db),
      (error: unknown) => error instanceof UploadError && error.status === 401 && /token expired/.test(error.message)
    );
    assert.equal(refreshed, 1);
    assert.deepEqual(queue.remaining, [1]);
  });

  it('400: logs loudly and throws, nothing completed', async () => {
    const queue = new FakeQueue([1]);
    const { fetch } = stubFetch(400, { message: 'batch.0.op: Input should be PUT, PATCH or DELETE' });
    const logger = recordingLogger();
    await assert.rejects(make(fetch, { logger }).uploadData(queue.db), (error: unknown) => error instanceof UploadError && error.status === 400);
    assert.equal(logger.errors.length, 1);
    assert.match(logger.errors[0], /HTTP 400.*batch\.0\.op/);
    assert.deepEqual(queue.remaining, [1]);
  });

  it('other statuses and network errors throw, nothing completed', async () => {
    const queue = new FakeQueue([1]);
    await assert.rejects(make(stubFetch(502, 'Bad Gateway').fetch).uploadData(queue.db), (e: unknown) => e instanceof UploadError && e.status === 502);
    const failing: FetchLike = async () => {
      throw new TypeError('fetch failed');
    };
    await assert.rejects(make(failing).uploadData(queue.db), (e: unknown) => e instanceof UploadError && e.status === 0);
    assert.deepEqual(queue.remaining, [1]);
  });

  it('a 2xx body that is not one result per transaction: logs, throws, completes nothing', async () => {
    for (const body of [results(success), '{"ok": true}', 'not json', results(success, { status: 'weird' } as never)]) {
      const queue = new FakeQueue([1, 1]);
      const logger = recordingLogger();
      await assert.rejects(make(stubFetch(200, body).fetch, { logger }).uploadData(queue.db), UploadError);
      assert.deepEqual(queue.remaining, [1, 2]);
      assert.equal(logger.errors.length, 1);
    }
  });

  it('maxTransactionsPerRequest and maxRequestBytes bound a request; one transaction is always sent', async () => {
    const queue = new FakeQueue([1, 1, 1, 1, 1]);
    const a = stubFetch(200, results(success, success));
    await make(a.fetch, { maxTransactionsPerRequest: 2 }).uploadData(queue.db);
    assert.equal(a.calls[0].body.transactions.length, 2);
    assert.deepEqual(queue.remaining, [3, 4, 5]);

    const big = new FakeQueue([]);
    big.add(1, 1, { name: 'x'.repeat(400) });
    big.add(1, 2, { name: 'y'.repeat(400) });
    const b = stubFetch(200, results(success));
    await make(b.fetch, { maxRequestBytes: 100 }).uploadData(big.db);
    assert.equal(b.calls[0].body.transactions.length, 1, 'over the budget, but the first transaction is sent alone');
    assert.deepEqual(big.remaining, [2]);
  });

  it('without getCrudTransactions() (older SDKs) it sends one transaction from getNextCrudTransaction()', async () => {
    const queue = new FakeQueue([1, 1], false);
    const { fetch, calls } = stubFetch(200, results(success));
    await make(fetch).uploadData(queue.db);
    assert.equal(calls[0].body.transactions.length, 1);
    assert.deepEqual(queue.remaining, [2]);
  });

  it('sends up to 50 transactions per request by default', async () => {
    const queue = new FakeQueue(Array.from({ length: 60 }, () => 1));
    const { fetch, calls } = cappedFetch(1_000_000);
    const upload = make(fetch);
    await upload.uploadData(queue.db);
    await upload.uploadData(queue.db);
    assert.deepEqual(
      calls.map((c) => c.body.transactions.length),
      [50, 10]
    );
    assert.deepEqual(queue.remaining, []);
  });

  it('413 for several transactions: halves and sends again in the same call, then keeps under the refused size', async () => {
    // Given 8 transactions of about 500 bytes each and a server that refuses bodies over 1,500 bytes
    const queue = new FakeQueue([]);
    for (let i = 1; i <= 8; i++) queue.add(1, i, { name: 'x'.repeat(450) });
    const { fetch, calls } = cappedFetch(1_500);
    const upload = make(fetch, { logger: recordingLogger() });

    // When uploadData() is called until the queue is empty
    let uploads = 0;
    while (queue.transactions.length > 0 && uploads < 10) {
      await upload.uploadData(queue.db);
      uploads++;
    }

    // Then the first call sent 8, 4, then 2 transactions; later calls send 2 at a time and get no 413
    assert.deepEqual(
      calls.map((c) => c.body.transactions.length),
      [8, 4, 2, 2, 2, 2]
    );
    assert.equal(uploads, 4);
    assert.deepEqual(queue.remaining, []);
  });

  it('413 for a single transaction: by default it is completed and handed to onRejected as TOO_LARGE, loudly logged', async () => {
    // Given a huge transaction at the head of the queue, and a small one after it
    const queue = new FakeQueue([]);
    queue.add(2, 1, { name: 'x'.repeat(5_000) });
    queue.add(1, 2);
    const { fetch, calls } = cappedFetch(2_000);
    const logger = recordingLogger();
    const rejected: [FatalErrorResult, CrudTransactionLike][] = [];
    const upload = make(fetch, { logger, onRejected: (result, transaction) => void rejected.push([result, transaction]) });

    // When uploadData() is called twice
    await upload.uploadData(queue.db);
    await upload.uploadData(queue.db);

    // Then the huge one went to onRejected with TOO_LARGE and its size, and the small one uploaded
    assert.deepEqual(
      calls.map((c) => c.body.transactions.map((t) => t.transaction_id)),
      [[1, 2], [1], [2]]
    );
    assert.equal(rejected.length, 1);
    const [result, transaction] = rejected[0];
    assert.equal(transaction.transactionId, 1);
    assert.equal(result.status, 'fatal_error');
    assert.equal(result.failed_operation.error_code, 'TOO_LARGE');
    assert.equal(result.failed_operation.op_id, 1);
    assert.ok(Number(result.failed_operation.details?.bytes) > 10_000);
    assert.deepEqual(queue.remaining, []);
    assert.equal(logger.errors.length, 1);
    assert.match(logger.errors[0], /too large for any request.*TOO_LARGE/);
  });

  it("413 for a single transaction with onTooLarge: 'keep': logged, thrown, and it stays queued", async () => {
    const queue = new FakeQueue([]);
    queue.add(1, 1, { name: 'x'.repeat(5_000) });
    const { fetch } = cappedFetch(2_000);
    const logger = recordingLogger();
    const rejected: unknown[] = [];
    const upload = make(fetch, { logger, onTooLarge: 'keep', onRejected: (r) => void rejected.push(r) });
    await assert.rejects(upload.uploadData(queue.db), (error: unknown) => error instanceof UploadError && error.status === 413);
    assert.deepEqual(queue.remaining, [1]);
    assert.deepEqual(rejected, []);
    assert.match(logger.errors[0], /too large for any request.*stays queued/);
  });

  it('413 on the one-transaction path (no getCrudTransactions()): the transaction becomes TOO_LARGE', async () => {
    const queue = new FakeQueue([], false);
    queue.add(1, 1, { name: 'x'.repeat(5_000) });
    queue.add(1, 2);
    const { fetch, calls } = cappedFetch(2_000);
    const codes: string[] = [];
    const upload = make(fetch, { logger: recordingLogger(), onRejected: (r) => void codes.push(r.failed_operation.error_code) });
    await upload.uploadData(queue.db);
    assert.deepEqual(codes, ['TOO_LARGE']);
    assert.deepEqual(queue.remaining, [2]);
    assert.equal(calls.length, 1);
  });
});
