/**
 * Starts the Python backend's local HTTP server (`python -m powersync_upload.local serve`) on a free
 * port with a fresh SQLite database built from the project's schema (db/migrations/sqlite then
 * db/demo/sqlite, via `powersync_upload.local.create_demo_database`), and mints HS256 tokens for it.
 *
 * Python: `$PYTHON`, else the project's `.venv/bin/python`, else `python3`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { PowerSyncDatabase, type Schema } from '@powersync/node';
import Database from 'better-sqlite3';

import type { FetchLike } from '../src/connector.js';

/** clients/typescript (this file runs from clients/typescript/dist/test). */
export const CLIENT_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const REPO_ROOT = join(CLIENT_ROOT, '..', '..');
export const USER_ID = '11111111-1111-1111-1111-111111111111';

function python(): string {
  if (process.env.PYTHON) return process.env.PYTHON;
  const venv = join(REPO_ROOT, '.venv', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function base64url(value: string | Buffer): string {
  return Buffer.from(value).toString('base64url');
}

/** An HS256 JWT, signed with node:crypto. */
export function signJwt(claims: Record<string, unknown>, secret: string): string {
  const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = base64url(JSON.stringify(claims));
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

export interface Backend {
  url: string;
  endpoint: string;
  databasePath: string;
  secret: string;
  token(sub?: string): string;
  /** Runs a read-only query on the server's SQLite database. */
  rows(sql: string, ...params: unknown[]): Record<string, unknown>[];
  /** What the server printed so far (shown when a test fails). */
  output(): string;
  stop(): Promise<void>;
}

/** Starts `serve`; `env` adds or overrides its environment (e.g. `MAX_BODY_BYTES`). */
export async function startBackend(env: Record<string, string> = {}): Promise<Backend> {
  const dir = mkdtempSync(join(tmpdir(), 'powersync-upload-client-'));
  const databasePath = join(dir, 'server.sqlite');
  const baseEnv = { ...process.env, PYTHONPATH: join(REPO_ROOT, 'functions', 'upload') };
  const created = spawnSync(
    python(),
    ['-c', 'import sys, pathlib; from powersync_upload.local import create_demo_database as c; c(pathlib.Path(sys.argv[1]))', databasePath],
    { env: baseEnv, encoding: 'utf8' }
  );
  if (created.status !== 0) {
    throw new Error(`could not create the server database with ${python()}: ${created.stderr || created.error}`);
  }

  const port = await freePort();
  const secret = randomBytes(32).toString('hex');
  let output = '';
  const child: ChildProcess = spawn(python(), ['-m', 'powersync_upload.local', 'serve'], {
    cwd: REPO_ROOT,
    env: {
      ...baseEnv,
      PORT: String(port),
      DATABASE_URL: `sqlite:///${databasePath}`,
      JWT_SECRET: secret,
      POWERTOOLS_LOG_LEVEL: process.env.POWERTOOLS_LOG_LEVEL ?? 'WARNING',
      ...env
    },
    stdio: ['ignore', 'pipe', 'pipe']
  });
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const url = `http://127.0.0.1:${port}`;
  const backend: Backend = {
    url,
    endpoint: `${url}/api/data`,
    databasePath,
    secret,
    token: (sub = USER_ID) => signJwt({ sub, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 3600 }, secret),
    rows: (sql, ...params) => {
      const db = new Database(databasePath, { readonly: true, fileMustExist: true });
      try {
        return db.prepare(sql).all(...params) as Record<string, unknown>[];
      } finally {
        db.close();
      }
    },
    output: () => output,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    }
  };

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await backend.stop();
      throw new Error(`serve exited (${child.exitCode ?? child.signalCode}) before it answered /health:\n${output}`);
    }
    try {
      const response = await fetch(`${url}/health`);
      if (response.ok) return backend;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await backend.stop();
      throw new Error(`serve did not answer GET /health within 30 s:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A real SDK client database (better-sqlite3) in `dir`, initialized; no PowerSync Service. */
export async function openClient(schema: Schema, dir: string): Promise<PowerSyncDatabase> {
  const db = new PowerSyncDatabase({
    schema,
    database: { dbFilename: 'client.sqlite', dbLocation: dir, implementation: { type: 'better-sqlite3' } }
  });
  await db.init();
  return db;
}

/** Closes what a test opened: the client database, the backend, the temporary folder. */
export async function closeAll(db: PowerSyncDatabase | undefined, backend: Backend | undefined, dir: string | undefined): Promise<void> {
  await db?.close();
  await backend?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}

/** A recorded answer: the HTTP status and the parsed JSON body (`{}` when empty). */
export interface Answer<T> {
  status: number;
  body: T;
}

/**
 * A fetch that forwards every request and pushes each answer onto `answers`; after `loseNext()`, it
 * throws the next answer away once the server has sent it (a connection dropped after COMMIT).
 */
export function recordingFetch<T>(answers: Answer<T>[]): { fetch: FetchLike; loseNext(): void } {
  let lose = false;
  const wrapped: FetchLike = async (url, init) => {
    const response = await fetch(url, init);
    const text = await response.text();
    answers.push({ status: response.status, body: (text ? JSON.parse(text) : {}) as T });
    if (lose) {
      lose = false;
      throw new TypeError('fetch failed: the connection dropped after the server answered');
    }
    return new Response(text, { status: response.status, headers: response.headers });
  };
  return { fetch: wrapped, loseNext: () => void (lose = true) };
}
