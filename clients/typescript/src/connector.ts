/**
 * `uploadData()` for PowerSync apps that upload to the powersync-upload backend (`POST /api/data`).
 *
 * It follows docs/contract.md section 5 (in the backend's repository):
 *
 * - It sends whole client transactions, never a `getCrudBatch()` window that may cut one in two:
 *   up to `maxTransactionsPerRequest` transactions from `db.getCrudTransactions()` (or one from
 *   `db.getNextCrudTransaction()` on SDKs without it) in **shape A**,
 *   `{"transactions": [{"transaction_id", "crud": [...]}], "client_id"}`.
 * - On 2xx it completes the contiguous prefix of transactions whose result is `success` or
 *   `fatal_error`, and hands each `fatal_error` to `onRejected(result, transaction)`. A
 *   `retryable_error` stops there: it waits the result's `retry_after_ms` and throws, so the SDK
 *   keeps that transaction (and those after it) queued and calls `uploadData()` again. A
 *   `not_attempted` (after a fatal error under `on_fatal_error: stop`) also stops there; it throws
 *   when nothing was completed, and otherwise returns, since the SDK then calls `uploadData()` again
 *   at once for the rest (it only delays when the head of its queue did not move).
 * - 503 (and 429): waits `Retry-After` (capped by `maxRetryAfterMs`), then throws.
 * - 401: awaits `refreshCredentials()`, then throws.
 * - 413 (an event over Lambda's 6 MB, which the function cannot read; a body over the server's own cap,
 *   `MAX_BODY_BYTES`, is answered per transaction instead: `not_attempted` past it, `fatal_error`
 *   `TOO_LARGE` for a transaction larger than it) for a request of several transactions: it halves the number of
 *   transactions and sends again at once, and keeps later requests below the refused size (and within
 *   the size that then passed), so a queue of similar transactions meets one 413, not one per call.
 *   413 for a single transaction: that transaction can never upload, and by default it is completed
 *   and handed to `onRejected` with the code `TOO_LARGE` (after a loud `logger.error`; the device
 *   reverts it at the next checkpoint, like a rejected one), so it does not block the queue forever;
 *   `onTooLarge: 'keep'` keeps it queued instead (and throws).
 * - 400: a connector bug (the server refused the envelope): `logger.error`, then throws (the
 *   transactions stay queued; nothing is dropped silently).
 * - Anything else (other status, network error, timeout, a 2xx body that is not one result per
 *   transaction): throws without completing anything.
 *
 * The server applies each transaction in one database transaction and never answers 2xx before it
 * committed, and replays are harmless, so retrying everything that was not completed is always safe.
 *
 * Why shape A with several transactions: one request per transaction would cost one round trip
 * each (an offline device can queue hundreds), and shape A gives one result per transaction, so a
 * temporary failure half-way still lets the committed prefix complete. `complete()` on a
 * transaction from `getCrudTransactions()` removes it *and every earlier one* from the queue, so
 * only the last transaction of the completed prefix is completed; a transaction after the first
 * one that must stay queued is never completed. `maxTransactionsPerRequest: 1` sends one
 * transaction per request.
 *
 * The types below are structural: `AbstractPowerSyncDatabase`, `CrudTransaction` and `CrudEntry` from
 * `@powersync/web`, `@powersync/react-native` or `@powersync/node` fit them, and this file imports no
 * SDK package at run time (the package's peer dependency `@powersync/common` is the SDK's own, whose
 * `AbstractPowerSyncDatabase` the package test type-checks against `uploadData()`).
 */

/** The parts of a PowerSync `CrudEntry` that are uploaded. */
export interface CrudEntryLike {
  /** Auto-incrementing client-side id (`op_id`). */
  clientId: number;
  op: string;
  table: string;
  id: string;
  opData?: Record<string, unknown>;
  previousValues?: Record<string, unknown>;
  metadata?: string;
  transactionId?: number;
}

/** A PowerSync `CrudTransaction`: `complete()` removes it and every earlier entry from the queue. */
export interface CrudTransactionLike {
  crud: CrudEntryLike[];
  transactionId?: number;
  complete(writeCheckpoint?: string): Promise<void>;
}

/** The parts of a PowerSync database (`AbstractPowerSyncDatabase`) that `uploadData()` uses. */
export interface UploadDatabase {
  getNextCrudTransaction(): Promise<CrudTransactionLike | null>;
  getCrudTransactions?(): AsyncIterable<CrudTransactionLike>;
  getClientId?(): Promise<string>;
}

/** What `fetch` must offer (the global `fetch` of browsers, React Native and Node 18+ does). */
export interface ResponseLike {
  status: number;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
}
export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body: string; signal?: AbortSignal }
) => Promise<ResponseLike>;

export interface Warning {
  operation_index: number;
  code: string;
}
export interface FailedOperation {
  /** `NOT_NULL_VIOLATION`, `UNIQUE_VIOLATION`, `FOREIGN_KEY_VIOLATION`, `CHECK_VIOLATION`,
   * `CONSTRAINT_VIOLATION`, `INVALID_DATA`, `SCHEMA_MISMATCH`, `UNAUTHORIZED`, `CONFLICT` or
   * `UNCLASSIFIED_ERROR` (README, "The wire contract"), or `TOO_LARGE`: not a server result but
   * this connector's, for a transaction that alone got HTTP 413 (`details.bytes`: its size in the
   * request, UTF-8 bytes; `details.status`: 413). */
  error_code: string;
  message: string;
  operation_index: number;
  op_id?: number | null;
  details?: Record<string, unknown>;
}
export interface SuccessResult {
  status: 'success';
  warnings?: Warning[];
}
export interface FatalErrorResult {
  status: 'fatal_error';
  requires_client_handling: boolean;
  message: string;
  failed_operation: FailedOperation;
}
export interface RetryableErrorResult {
  status: 'retryable_error';
  message: string;
  retry_after_ms?: number;
}
export interface NotAttemptedResult {
  status: 'not_attempted';
}
export type TransactionResult = SuccessResult | FatalErrorResult | RetryableErrorResult | NotAttemptedResult;

export interface Logger {
  error(...args: unknown[]): void;
  warn(...args: unknown[]): void;
}

export interface UploaderOptions {
  /** Full URL of the upload endpoint, e.g. `https://abc.execute-api.eu-west-1.amazonaws.com/api/data`. */
  endpoint: string;
  /** The bearer token (usually the PowerSync token from the connector's `fetchCredentials()`). */
  getToken: () => string | Promise<string>;
  /** Called once per rejected transaction, before it is completed (it reverts on the device at the
   * next checkpoint). Show or log it. Errors it throws are logged and do not block the queue. */
  onRejected?: (result: FatalErrorResult, transaction: CrudTransactionLike) => void | Promise<void>;
  /** Called after a 401, before throwing: make `getToken()` return a fresh token next time. */
  refreshCredentials?: () => void | Promise<void>;
  /** Transactions per request, at most the server's `max_transactions`. Default 50 (the server's
   * default). `1` sends one transaction per request. */
  maxTransactionsPerRequest?: number;
  /** Stop adding transactions once the body would exceed this many bytes (a single transaction is
   * always sent). Keep it under the server's `MAX_BODY_BYTES` (default 5 MB) and the API's own cap.
   * After a 413 the uploader lowers it below the refused body's size by itself. Default 1,000,000. */
  maxRequestBytes?: number;
  /** A single transaction that got HTTP 413 (too large for any request): `'reject'` (default)
   * completes it and hands it to `onRejected` with the code `TOO_LARGE`, so the rest of the queue
   * uploads; `'keep'` keeps it queued (the queue stays blocked until the server accepts it, e.g.
   * after `MAX_BODY_BYTES` is raised). Either way it is logged with `logger.error`. */
  onTooLarge?: 'reject' | 'keep';
  /** Longest wait for `Retry-After` / `retry_after_ms`. Default 60,000 ms. */
  maxRetryAfterMs?: number;
  /** Abort a request after this long (API Gateway HTTP APIs stop at 30 s). Default 40,000 ms. */
  timeoutMs?: number;
  /** Default: the global `fetch`. */
  fetch?: FetchLike;
  /** Default: `console`. */
  logger?: Logger;
}

/** Thrown by `uploadData()` whenever something stays queued for the SDK to retry. */
export class UploadError extends Error {
  constructor(
    message: string,
    /** HTTP status, or 0 when no response was received. */
    readonly status: number,
    /** How long this call already waited before throwing (Retry-After), in ms. */
    readonly waitedMs = 0
  ) {
    super(message);
    this.name = 'UploadError';
  }
}

const DEFAULTS = {
  maxTransactionsPerRequest: 50,
  maxRequestBytes: 1_000_000,
  maxRetryAfterMs: 60_000,
  timeoutMs: 40_000,
  onTooLarge: 'reject' as 'reject' | 'keep'
};

/** One picked transaction with its shape A JSON text (serialised once) and that text's UTF-8 size. */
interface Picked {
  transaction: CrudTransactionLike;
  json: string;
  bytes: number;
}

export class PowerSyncUploader {
  private readonly options: UploaderOptions & typeof DEFAULTS;
  private readonly clientIds = new WeakMap<object, string>();

  constructor(options: UploaderOptions) {
    this.options = { ...DEFAULTS, ...stripUndefined(options) } as UploaderOptions & typeof DEFAULTS;
    if (!this.options.endpoint) throw new Error('PowerSyncUploader: endpoint is required');
    if (!(this.options.maxTransactionsPerRequest >= 1)) {
      throw new Error('PowerSyncUploader: maxTransactionsPerRequest must be at least 1');
    }
  }

  /** Use as (or call from) `PowerSyncBackendConnector.uploadData(database)`. */
  uploadData = async (db: UploadDatabase): Promise<void> => {
    const clientId = await this.clientId(db);
    const picked = await this.nextTransactions(db, clientId);
    if (picked.length === 0) return;

    // A 413 for several transactions: halve and send again (one round trip per halving).
    let count = picked.length;
    for (;;) {
      const sent = picked.slice(0, count);
      const body = requestBody(sent, clientId);
      const response = await this.post(body);
      const status = response.status;
      const text = await response.text().catch(() => '');

      if (status >= 200 && status < 300) {
        // After a 413 in this call, this size is known to pass: later requests stay within it.
        if (count < picked.length) this.learnedMaxBytes = Math.min(this.learnedMaxBytes, utf8Length(body));
        await this.handleResults(
          sent.map((p) => p.transaction),
          parseResults(text, sent.length, this.logger)
        );
        return;
      }
      const message = errorMessage(text);
      if (status === 413) {
        this.learnedMaxBytes = Math.min(this.learnedMaxBytes, utf8Length(body) - 1);
        if (count > 1) {
          this.logger.warn(
            `upload: HTTP 413 for ${count} transactions (${utf8Length(body)} bytes): sending ${Math.floor(count / 2)}`
          );
          count = Math.floor(count / 2);
          continue;
        }
        await this.tooLarge(sent[0], message);
        return;
      }
      if (status === 503 || status === 429) {
        const waitMs = this.retryAfterMs(response.headers.get('Retry-After'));
        await sleep(waitMs);
        throw new UploadError(`upload: HTTP ${status}, retry (${message})`, status, waitMs);
      }
      if (status === 401) {
        try {
          await this.options.refreshCredentials?.();
        } catch (error) {
          this.logger.error('upload: refreshCredentials() failed', error);
        }
        throw new UploadError(`upload: HTTP 401, credentials refreshed (${message})`, status);
      }
      if (status === 400) {
        this.logger.error(
          `upload: HTTP 400 from ${this.options.endpoint}: ${message}. ` +
            'The server refused the request envelope: this is a connector bug; the transactions stay queued.'
        );
      }
      throw new UploadError(`upload: HTTP ${status} (${message})`, status);
    }
  };

  /** The byte budget learnt from 413 answers: below the smallest refused body, and at most the
   * size that passed after one (so a queue of similar transactions gets no second 413). */
  private learnedMaxBytes = Number.POSITIVE_INFINITY;

  /** One transaction got 413 on its own: complete it as TOO_LARGE (default) or keep it queued. */
  private async tooLarge(picked: Picked, message: string): Promise<void> {
    const { transaction, bytes } = picked;
    const what =
      `upload: transaction ${transaction.transactionId ?? '(no id)'} (${transaction.crud.length} operations, ` +
      `${bytes} bytes) is too large for any request: HTTP 413 from ${this.options.endpoint} (${message}).`;
    if (this.options.onTooLarge === 'keep') {
      this.logger.error(`${what} It stays queued (onTooLarge: 'keep'): nothing after it uploads until the server accepts it.`);
      throw new UploadError(`upload: HTTP 413 (${message})`, 413);
    }
    this.logger.error(
      `${what} It is completed and handed to onRejected as TOO_LARGE: the device reverts it at the next checkpoint. ` +
        "Raise the server's body cap or split such writes; onTooLarge: 'keep' keeps it queued instead."
    );
    const result: FatalErrorResult = {
      status: 'fatal_error',
      requires_client_handling: false,
      message: `transaction too large for any request (${bytes} bytes; HTTP 413)`,
      failed_operation: {
        error_code: 'TOO_LARGE',
        message: `the request with this transaction alone was over the server's body cap (${message})`,
        operation_index: 0,
        op_id: transaction.crud[0]?.clientId ?? null,
        details: { bytes, status: 413 }
      }
    };
    await this.reject(result, transaction);
    await transaction.complete();
  }

  private async reject(result: FatalErrorResult, transaction: CrudTransactionLike): Promise<void> {
    try {
      await this.options.onRejected?.(result, transaction);
    } catch (error) {
      this.logger.error('upload: onRejected() threw; the rejected transaction is completed anyway', error);
    }
  }

  private get logger(): Logger {
    return this.options.logger ?? console;
  }

  /** Whole transactions, oldest first: up to maxTransactionsPerRequest and the byte budget
   * (maxRequestBytes, lowered after 413 answers); the first one is always taken. */
  private async nextTransactions(db: UploadDatabase, clientId: string | undefined): Promise<Picked[]> {
    const { maxTransactionsPerRequest } = this.options;
    const maxBytes = Math.min(this.options.maxRequestBytes, this.learnedMaxBytes);
    if (maxTransactionsPerRequest === 1 || typeof db.getCrudTransactions !== 'function') {
      const next = await db.getNextCrudTransaction();
      return next ? [pick(next)] : [];
    }
    const picked: Picked[] = [];
    let bytes = utf8Length(requestBody([], clientId)) - 1; // the body is this plus each one and a comma
    for await (const transaction of db.getCrudTransactions()) {
      const entry = pick(transaction);
      if (picked.length > 0 && bytes + entry.bytes + 1 > maxBytes) break;
      picked.push(entry);
      bytes += entry.bytes + 1;
      if (picked.length >= maxTransactionsPerRequest) break;
    }
    return picked;
  }

  private async clientId(db: UploadDatabase): Promise<string | undefined> {
    if (typeof db.getClientId !== 'function') return undefined;
    let id = this.clientIds.get(db);
    if (id === undefined) {
      try {
        id = await db.getClientId();
        this.clientIds.set(db, id);
      } catch {
        return undefined;
      }
    }
    return id;
  }

  private async post(body: string): Promise<ResponseLike> {
    const fetchImpl: FetchLike = this.options.fetch ?? (globalThis.fetch as unknown as FetchLike);
    const token = await this.options.getToken();
    const controller = typeof AbortController === 'function' ? new AbortController() : undefined;
    const timer = controller ? setTimeout(() => controller.abort(), this.options.timeoutMs) : undefined;
    try {
      return await fetchImpl(this.options.endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
        body,
        signal: controller?.signal
      });
    } catch (error) {
      throw new UploadError(`upload: request to ${this.options.endpoint} failed: ${String(error)}`, 0);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  private async handleResults(transactions: CrudTransactionLike[], results: TransactionResult[]): Promise<void> {
    let done = 0;
    for (; done < results.length; done++) {
      const result = results[done];
      if (result.status === 'success') continue;
      if (result.status === 'fatal_error') {
        await this.reject(result, transactions[done]);
        continue;
      }
      break;
    }
    // complete() removes this transaction and every earlier one from the queue.
    if (done > 0) await transactions[done - 1].complete();
    if (done === results.length) return;

    const stop = results[done];
    if (stop.status === 'retryable_error') {
      const waitMs = Math.min(Math.max(0, Number(stop.retry_after_ms) || 0), this.options.maxRetryAfterMs);
      await sleep(waitMs);
      throw new UploadError(
        `upload: transaction ${done + 1} of ${results.length} must be retried: ${stop.message ?? ''}`,
        200,
        waitMs
      );
    }
    if (stop.status === 'not_attempted' && done > 0) return; // the SDK calls uploadData() again at once
    throw new UploadError(`upload: transaction ${done + 1} of ${results.length} was ${stop.status}`, 200);
  }

  private retryAfterMs(header: string | null): number {
    let ms = 1000;
    if (header) {
      const seconds = Number(header);
      if (Number.isFinite(seconds)) ms = seconds * 1000;
      else if (!Number.isNaN(Date.parse(header))) ms = Date.parse(header) - Date.now();
    }
    return Math.min(Math.max(0, ms), this.options.maxRetryAfterMs);
  }
}

/** Shape A's entry for one transaction: canonical keys; `undefined` ones vanish in JSON. */
export function toShapeA(transaction: CrudTransactionLike): Record<string, unknown> {
  return {
    transaction_id: transaction.transactionId,
    crud: transaction.crud.map((entry) => ({
      op_id: entry.clientId,
      op: entry.op,
      table: entry.table,
      id: entry.id,
      op_data: entry.opData,
      previous_values: entry.previousValues,
      metadata: entry.metadata
    }))
  };
}

function pick(transaction: CrudTransactionLike): Picked {
  const json = JSON.stringify(toShapeA(transaction));
  return { transaction, json, bytes: utf8Length(json) };
}

/** The shape A body for these transactions (their JSON texts joined, not serialised again). */
function requestBody(picked: Picked[], clientId: string | undefined): string {
  const transactions = `{"transactions":[${picked.map((p) => p.json).join(',')}]`;
  return clientId === undefined ? `${transactions}}` : `${transactions},"client_id":${JSON.stringify(clientId)}}`;
}

const STATUSES = new Set(['success', 'fatal_error', 'retryable_error', 'not_attempted']);

function parseResults(text: string, expected: number, logger: Logger): TransactionResult[] {
  let results: unknown;
  try {
    results = (JSON.parse(text) as { results?: unknown }).results;
  } catch {
    results = undefined;
  }
  if (
    !Array.isArray(results) ||
    results.length !== expected ||
    !results.every((r) => r && typeof r === 'object' && STATUSES.has((r as { status?: unknown }).status as string))
  ) {
    logger.error(`upload: the 2xx response is not one result per transaction (${expected} sent): ${text.slice(0, 500)}`);
    throw new UploadError('upload: unexpected response body', 200);
  }
  return results as TransactionResult[];
}

function errorMessage(text: string): string {
  try {
    const message = (JSON.parse(text) as { message?: unknown }).message;
    if (typeof message === 'string') return message;
  } catch {
    // not JSON
  }
  return text.slice(0, 500);
}

function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
