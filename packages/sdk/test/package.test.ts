import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

// An external system uses the SDK from plain `node` or a bundler, never through tsx: the package must ship
// JavaScript with type declarations (issue 9 §9).
const run = promisify(execFile);
const SDK = fileURLToPath(new URL('..', import.meta.url));
const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const app = mkdtempSync(join(tmpdir(), 'sdk-consumer-'));
after(() => rmSync(app, { recursive: true, force: true }));

describe('the published shape of @carevault/sdk', () => {
  test('plain node (no TypeScript loader) imports both entry points', async () => {
    const script =
      "const sdk = await import('@carevault/sdk'); const node = await import('@carevault/sdk/node');" +
      'console.log(JSON.stringify({ tm: typeof sdk.TokenManager, err: typeof sdk.OAuthError, tls: typeof node.tlsFetch }));';
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT });
    assert.deepEqual(JSON.parse(stdout), { tm: 'function', err: 'function', tls: 'function' });
  });

  test('the carevault-client bin answers --help with its usage (exit 0) and an unknown command with exit 2', async () => {
    const bin = join(SDK, 'bin', 'carevault-client.js');
    for (const flag of ['--help', '-h', 'help']) {
      const { stdout } = await run(process.execPath, [bin, flag]);
      assert.match(stdout, /^usage: carevault-client scp-sync/);
    }
    const unknown = await run(process.execPath, [bin, 'bogus']).catch((err: { code: number; stderr: string }) => err);
    assert.ok('code' in unknown && unknown.code === 2);
    assert.match('stderr' in unknown ? unknown.stderr : '', /unknown command "bogus"/);
  });

  test('a TypeScript consumer type-checks against the declarations (no .ts sources involved)', async () => {
    const modules = join(app, 'node_modules', '@carevault');
    await run('mkdir', ['-p', modules]);
    symlinkSync(SDK, join(modules, 'sdk'));
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, types: [] },
        files: ['main.ts'],
      }),
    );
    writeFileSync(
      join(app, 'main.ts'),
      "import { TokenManager } from '@carevault/sdk';\n" +
        "const t: TokenManager = new TokenManager({ issuer: 'https://localhost:8443', clientId: 'x', auth: { method: 'tls_client_auth' } });\n" +
        'export const token: Promise<string> = t.getToken();\n',
    );
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = await run(process.execPath, [tsc, '-p', app]).catch((err: { stdout: string }) => err);
    assert.equal('stdout' in result ? result.stdout : '', '', 'the consumer compiles');
  });
});
