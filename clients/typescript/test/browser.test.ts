/**
 * A real browser: test/browser/page (Vite, @powersync/web) in headless Chromium, driven by
 * playwright-core with Debian's /usr/bin/chromium (`CHROMIUM` overrides the path, and on GitHub's
 * runners their Chrome is used; playwright's own browser downloads are never used). The page is served by `vite preview` on http://localhost:<port>
 * and uploads to `serve` on http://127.0.0.1:<other port>: another origin, so every POST with its
 * `Authorization` header is preceded by a CORS preflight. Checks: the preflight and the POSTs reached
 * `serve`, the queue drained, the server rows match, the rejected transaction and the one larger
 * than the body cap (serve runs with an 8 kB cap: answered fatal_error TOO_LARGE in a 200) reached
 * onRejected, and both are in the errors table.
 * The screenshot is kept as artifacts/browser-upload.png.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { chromium, type BrowserContext } from 'playwright-core';
import { build, preview, type PreviewServer } from 'vite';

import { CLIENT_ROOT, startBackend, USER_ID, type Backend } from './backend.js';
import type { UploadReport } from './browser/report.js';

const PAGE_ROOT = join(CLIENT_ROOT, 'test', 'browser', 'page');
const ARTIFACTS = join(CLIENT_ROOT, 'artifacts');
const SCREENSHOT = join(ARTIFACTS, 'browser-upload.png');
/** `CHROMIUM`, else Debian's Chromium, else the Chrome that GitHub's Ubuntu runners carry (`CHROME_BIN`). */
const CHROMIUM =
  [process.env.CHROMIUM, '/usr/bin/chromium', process.env.CHROME_BIN, '/usr/bin/google-chrome'].find((path) => path && existsSync(path)) ??
  '/usr/bin/chromium';


/** The page's `window`, seen from the test (which compiles without the DOM library). */
interface PageGlobals {
  uploadReport?: UploadReport;
}

describe('the connector in headless Chromium with @powersync/web, uploading to `serve` on another origin', () => {
  let backend: Backend;
  let server: PreviewServer;
  let context: BrowserContext;
  const scratch = mkdtempSync(join(tmpdir(), 'powersync-upload-browser-'));
  const browserConsole: string[] = [];

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (or set CHROMIUM to a Chromium or Chrome binary)`);
    backend = await startBackend({ MAX_BODY_BYTES: '8192' });
    const outDir = join(scratch, 'dist');
    const shared = {
      root: PAGE_ROOT,
      configFile: false as const,
      logLevel: 'warn' as const,
      // @powersync/web ships workers and WebAssembly: no dependency pre-bundling, ES module workers.
      optimizeDeps: { exclude: ['@powersync/web', '@journeyapps/wa-sqlite'] },
      worker: { format: 'es' as const },
      build: { outDir, emptyOutDir: true, target: 'es2022' }
    };
    await build(shared);
    server = await preview({ ...shared, preview: { host: 'localhost', port: 0, strictPort: false } });
    context = await chromium.launchPersistentContext(join(scratch, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync'
      ]
    });
  });

  after(async () => {
    await context?.close();
    await server?.close();
    await backend?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });


  it('the queue drains, the rows match, and the rejected and the too large transactions reach onRejected', async (t) => {
    // Given the page on http://localhost:<port>, told to upload to serve on http://127.0.0.1:<port>
    const pageUrl = server.resolvedUrls?.local[0];
    assert.ok(pageUrl, 'vite preview has a local URL');
    assert.notEqual(new URL(pageUrl).origin, new URL(backend.url).origin);
    const page = await context.newPage();
    page.on('console', (message) => void browserConsole.push(`${message.type()}: ${message.text()}`));
    page.on('pageerror', (error) => void browserConsole.push(`pageerror: ${error.message}`));
    const query = new URLSearchParams({ endpoint: backend.endpoint, token: backend.token(), owner: USER_ID });

    // When it writes and uploads
    await page.goto(`${pageUrl}?${query}`);
    let report: UploadReport;
    try {
      await page.waitForFunction(() => (globalThis as PageGlobals).uploadReport !== undefined, undefined, { timeout: 90_000 });
      report = (await page.evaluate(() => (globalThis as PageGlobals).uploadReport)) as UploadReport;
    } finally {
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      t.diagnostic(`screenshot: ${SCREENSHOT}`);
    }
    if (!report.ok) t.diagnostic(`${browserConsole.join('\n')}\n${backend.output()}`);
    assert.equal(report.ok, true, report.error);

    // Then the browser sent a CORS preflight and POSTs, each answered 200 (the transaction over the
    // body cap is answered fatal_error TOO_LARGE, not 413), and the queue drained
    const log = backend.output();
    assert.match(log, /"OPTIONS \/api\/data HTTP\/1\.1" 204/);
    assert.match(log, /"POST \/api\/data HTTP\/1\.1" 200/);
    assert.doesNotMatch(log, /"POST \/api\/data HTTP\/1\.1" (?!200)/);
    assert.equal(report.queued, 0);

    // And both rejected transactions reached onRejected, and the server has the others' rows
    assert.deepEqual(report.rejected, [
      { code: 'NOT_NULL_VIOLATION', table: 'lists', ops: ['PUT lists'], operations: 1 },
      { code: 'TOO_LARGE', table: undefined, ops: ['PUT todos'], operations: 20 }
    ]);
    const ids = report.ids!;
    assert.deepEqual(
      backend.rows('SELECT id, name, owner_id FROM lists ORDER BY name'),
      [
        { id: ids.laterList, name: 'After the rejected one', owner_id: USER_ID },
        { id: ids.list, name: 'Browser list', owner_id: USER_ID }
      ]
    );
    assert.deepEqual(
      backend.rows('SELECT id, list_id, description, completed FROM todos ORDER BY description'),
      [
        { id: ids.todos[0], list_id: ids.list, description: 'todo 0 ✓ ünïcødé', completed: 1 },
        { id: ids.todos[1], list_id: ids.list, description: 'todo 1 ✓ ünïcødé', completed: 0 }
      ]
    );
    assert.deepEqual(backend.rows('SELECT client_id, row_id, error_code FROM powersync_upload_errors ORDER BY error_code'), [
      { client_id: report.clientId, row_id: ids.rejectedList, error_code: 'NOT_NULL_VIOLATION' },
      { client_id: report.clientId, row_id: ids.hugeTodos[0], error_code: 'TOO_LARGE' }
    ]);
    assert.ok(statSync(SCREENSHOT).size > 1000, 'the screenshot was written');
  });
});
