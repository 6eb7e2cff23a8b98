/**
 * The connector as an app gets it: `npm pack` (which runs `prepack`, the build), the tarball installed
 * into a scratch app beside its peer dependency `@powersync/common`, then imported by Node and type
 * checked by TypeScript against the SDK's own `AbstractPowerSyncDatabase`.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { CLIENT_ROOT } from './backend.js';

const manifest = JSON.parse(readFileSync(join(CLIENT_ROOT, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  devDependencies: Record<string, string>;
};

function npm(args: string[], cwd: string): string {
  return execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('the packed connector', () => {
  let scratch: string;
  let packed: { filename: string; files: { path: string }[] };

  before(() => {
    scratch = mkdtempSync(join(tmpdir(), 'powersync-upload-pack-'));
    packed = (JSON.parse(npm(['pack', '--json', '--pack-destination', scratch], CLIENT_ROOT)) as (typeof packed)[])[0];
  });

  after(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('ships the built module, its types, the README and the licence, and no tests', () => {
    const files = packed.files.map((f) => f.path).sort();
    for (const file of ['LICENSE', 'README.md', 'package.json', 'dist/connector.js', 'dist/connector.d.ts']) {
      assert.ok(files.includes(file), `${file} is in the tarball: ${files.join(', ')}`);
    }
    assert.deepEqual(
      files.filter((f) => f.startsWith('test/') || f.startsWith('build/') || f.startsWith('bench/')),
      []
    );
  });

  it('installs into an app with @powersync/common, imports in Node and type-checks against the SDK types', () => {
    // Given a scratch app with the tarball and the peer dependency installed
    const app = join(scratch, 'app');
    execFileSync('mkdir', ['-p', app]);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'scratch-app', private: true, type: 'module' }));
    npm(
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--prefer-offline',
        join(scratch, packed.filename),
        `@powersync/common@${manifest.devDependencies['@powersync/common']}`
      ],
      app
    );

    // When Node imports it by its package name
    const imported = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import * as m from '${manifest.name}';
         const u = new m.PowerSyncUploader({ endpoint: 'http://127.0.0.1:1/api/data', getToken: () => 't' });
         await u.uploadData({ getNextCrudTransaction: async () => null, getCrudTransactions: async function* () {} });
         console.log(JSON.stringify(Object.keys(m).sort()));`
      ],
      { cwd: app, encoding: 'utf8' }
    );
    assert.equal(imported.status, 0, imported.stderr);
    assert.deepEqual(JSON.parse(imported.stdout), ['PowerSyncUploader', 'UploadError', 'toShapeA']);

    // And TypeScript compiles an app connector that hands the SDK's database to uploadData()
    writeFileSync(
      join(app, 'connector.ts'),
      `import type { AbstractPowerSyncDatabase, PowerSyncBackendConnector } from '@powersync/common';
       import { PowerSyncUploader, type FatalErrorResult } from '${manifest.name}';
       export class Connector implements PowerSyncBackendConnector {
         rejected: FatalErrorResult[] = [];
         private uploader = new PowerSyncUploader({
           endpoint: 'https://api.example/api/data',
           getToken: () => 'token',
           onRejected: (result) => void this.rejected.push(result)
         });
         async fetchCredentials() { return { endpoint: 'https://powersync.example', token: 'token' }; }
         uploadData(db: AbstractPowerSyncDatabase): Promise<void> { return this.uploader.uploadData(db); }
       }
      `
    );
    const tsc = spawnSync(
      process.execPath,
      [
        join(CLIENT_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
        '--noEmit',
        '--strict',
        '--skipLibCheck',
        '--target',
        'es2022',
        '--lib',
        'es2022,dom',
        '--module',
        'nodenext',
        '--moduleResolution',
        'nodenext',
        'connector.ts'
      ],
      { cwd: app, encoding: 'utf8' }
    );
    // Then it compiles
    assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);
  });
});
