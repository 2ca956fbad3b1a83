import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { freePort } from './helpers/platform.ts';
import { BIN, serveChild, withStore } from './helpers/serve.ts';
import { TEST_STORE } from './helpers/store.ts';

// Files at rest, the CA, and the mistakes a newcomer makes in the first hour (issue 9 §1, §2, §7).
const run = promisify(execFile);
const root = mkdtempSync(join(tmpdir(), 'carevault-hardening-'));
after(() => rmSync(root, { recursive: true, force: true }));

const mode = (path: string) => statSync(path).mode & 0o777;
const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

async function cli(args: string[], env: NodeJS.ProcessEnv = process.env) {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], {
      timeout: 60_000,
      env: withStore(args, env),
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** One line, no stack trace, exit code 1. */
function oneLineError(r: { code: number | null; stderr: string }, pattern: RegExp) {
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l && !l.startsWith('oidc-provider WARNING'));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0] as string, pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
}

describe('files at rest', () => {
  test('a data directory made 0755 beforehand, under umask 000: database, WAL, keys and PKI are owner-only', async () => {
    const dir = join(root, 'existing');
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    const port = await freePort();
    const s = await serveChild(['--port', String(port), '--data-dir', dir], { shell: 'umask 000;' });
    try {
      assert.match(s.output().stdout, /carevault is running/, s.output().stderr);
      // Writing something makes sure the WAL and shared-memory files exist.
      const r = await cli(['partition', 'add', 'perm-check', '--data-dir', dir]);
      assert.equal(r.code, 0, r.stderr);
      for (const f of TEST_STORE === 'sqlite'
        ? ['carevault.sqlite', 'carevault.sqlite-wal', 'carevault.sqlite-shm']
        : []) {
        assert.equal(mode(join(dir, f)), 0o600, f);
      }
      for (const d of ['keys', 'pki']) assert.equal(mode(join(dir, d)), 0o700, d);
      for (const f of ['keys/signing-keys.json', 'pki/ca-key.pem', 'pki/server-key.pem']) {
        assert.equal(mode(join(dir, f)), 0o600, f);
      }
      assert.match(s.output().stdout, /readable by others \(mode 0755\)/, 'a warning names the readable directory');
      // On the runtimes we recommend (Node 22 "Jod", 24 "Krypton") the engine has nothing to warn about.
      const lts = process.release.lts ?? '';
      if (lts >= 'Jod') assert.doesNotMatch(s.output().stderr, /Unsupported runtime/);
    } finally {
      await s.stop();
    }
  });

  test('database files that existed with a wide mode are narrowed at start', {
    skip: TEST_STORE === 'postgres' && 'the database is not a file on PostgreSQL',
  }, async () => {
    const dir = join(root, 'existing');
    chmodSync(join(dir, 'carevault.sqlite'), 0o644);
    chmodSync(join(dir, 'keys'), 0o755);
    const r = await cli(['partition', 'list', '--data-dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(mode(join(dir, 'carevault.sqlite')), 0o600);
  });

  test('a group- or world-writable data directory is refused with the reason and the fix', async () => {
    for (const m of [0o775, 0o777]) {
      const dir = join(root, `writable-${m.toString(8)}`);
      mkdirSync(dir);
      chmodSync(dir, m);
      const s = await serveChild(['--port', String(await freePort()), '--data-dir', dir]);
      const code = await s.exited;
      oneLineError({ code, stderr: s.output().stderr }, /is writable by (its group|everyone).*chmod 700/);
      assert.throws(() => statSync(join(dir, 'carevault.sqlite')), 'nothing was created');
      const admin = await cli(['client', 'list', '--data-dir', dir]);
      oneLineError(admin, /chmod 700/);
    }
  });
});

describe('the CA is never replaced behind the operator', () => {
  const dir = join(root, 'ca');
  const pki = join(dir, 'pki');

  test('first start creates it; later starts keep it byte for byte', async () => {
    const r = await cli(['partition', 'add', 'x', '--data-dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    const issued = await cli(['client', 'add', 'tcu', '--auth', 'tls_client_auth', '--data-dir', dir]);
    assert.equal(issued.code, 0, issued.stderr);
    const before = [sha(join(pki, 'ca.pem')), sha(join(pki, 'ca-key.pem'))];
    const s = await serveChild(['--port', String(await freePort()), '--data-dir', dir]);
    await s.stop();
    assert.deepEqual([sha(join(pki, 'ca.pem')), sha(join(pki, 'ca-key.pem'))], before);
  });

  test('ca.pem deleted (key still there) → refused, the key untouched', async () => {
    const keyHash = sha(join(pki, 'ca-key.pem'));
    copyFileSync(join(pki, 'ca.pem'), join(root, 'ca.pem.bak'));
    rmSync(join(pki, 'ca.pem'));
    const s = await serveChild(['--port', String(await freePort()), '--data-dir', dir]);
    oneLineError({ code: await s.exited, stderr: s.output().stderr }, /ca-key\.pem exists but .*ca\.pem does not/);
    assert.equal(sha(join(pki, 'ca-key.pem')), keyHash, 'the CA key was not overwritten');
    const admin = await cli(['client', 'add', 'tcu2', '--auth', 'tls_client_auth', '--data-dir', dir]);
    oneLineError(admin, /restore/);
    copyFileSync(join(root, 'ca.pem.bak'), join(pki, 'ca.pem'));
  });

  test('ca-key.pem deleted → refused', async () => {
    copyFileSync(join(pki, 'ca-key.pem'), join(root, 'ca-key.pem.bak'));
    rmSync(join(pki, 'ca-key.pem'));
    const s = await serveChild(['--port', String(await freePort()), '--data-dir', dir]);
    oneLineError({ code: await s.exited, stderr: s.output().stderr }, /ca\.pem exists but .*ca-key\.pem does not/);
    copyFileSync(join(root, 'ca-key.pem.bak'), join(pki, 'ca-key.pem'));
  });

  test('a key that does not belong to the certificate → refused', async () => {
    const other = join(root, 'other');
    assert.equal((await cli(['client', 'add', 'z', '--auth', 'tls_client_auth', '--data-dir', other])).code, 0);
    const good = readFileSync(join(pki, 'ca-key.pem'));
    writeFileSync(join(pki, 'ca-key.pem'), readFileSync(join(other, 'pki', 'ca-key.pem')));
    const s = await serveChild(['--port', String(await freePort()), '--data-dir', dir]);
    oneLineError({ code: await s.exited, stderr: s.output().stderr }, /is not the private key of/);
    writeFileSync(join(pki, 'ca-key.pem'), good);
  });

  test('a missing server certificate is reissued by the same CA, and that is logged', async () => {
    const caHash = sha(join(pki, 'ca.pem'));
    rmSync(join(pki, 'server.pem'));
    const s = await serveChild(['--port', String(await freePort()), '--data-dir', dir]);
    try {
      assert.match(s.output().stdout, /carevault is running/, s.output().stderr);
      assert.match(s.output().stdout, /issued a new server certificate/);
      assert.equal(sha(join(pki, 'ca.pem')), caHash);
    } finally {
      await s.stop();
    }
  });
});

describe('common mistakes get one line and an exit code', () => {
  test('port in use', async () => {
    const blocker = createServer();
    const port = await new Promise<number>((r) =>
      blocker.listen(0, '127.0.0.1', () => r((blocker.address() as { port: number }).port)),
    );
    try {
      const s = await serveChild(['--port', String(port), '--data-dir', join(root, 'busy')]);
      oneLineError(
        { code: await s.exited, stderr: s.output().stderr },
        new RegExp(`port 127.0.0.1:${port} is already in use`),
      );
    } finally {
      blocker.close();
    }
  });

  test('a --host that is not an address of this machine: one line, and no certificate written for it', async () => {
    const data = join(root, 'elsewhere');
    // TEST-NET-1 (RFC 5737): never an address of this machine, and an IP literal needs no name lookup.
    const s = await serveChild(['--port', String(await freePort()), '--data-dir', data, '--host', '192.0.2.1']);
    oneLineError({ code: await s.exited, stderr: s.output().stderr }, /192\.0\.2\.1 is not an address of this machine/);
    assert.equal(existsSync(join(data, 'pki', 'server.pem')), false);
  });

  test('a data directory that cannot be created', async () => {
    const file = join(root, 'a-file');
    writeFileSync(file, 'x');
    const s = await serveChild(['--port', String(await freePort()), '--data-dir', join(file, 'data')]);
    oneLineError({ code: await s.exited, stderr: s.output().stderr }, /is not a directory|cannot write/);
  });

  test('a database URL that cannot be used', async () => {
    for (const url of ['mysql://root@127.0.0.1/x', 'postgres://nobody:pw-s3cret@127.0.0.1:1/none']) {
      const env = { ...process.env, CAREVAULT_DATABASE_URL: url };
      const r = await cli(['client', 'list', '--data-dir', join(root, 'db')], env);
      oneLineError(r, /CAREVAULT_DATABASE_URL|PostgreSQL/);
      const s = await serveChild(['--port', String(await freePort()), '--data-dir', join(root, 'db')], { env });
      oneLineError({ code: await s.exited, stderr: s.output().stderr }, /CAREVAULT_DATABASE_URL|PostgreSQL/);
      assert.doesNotMatch(r.stderr + s.output().stderr, /pw-s3cret/, 'the password is never printed');
    }
  });

  test('admin commands print the running server’s URLs, not the default port', async () => {
    const dir = join(root, 'iss');
    const port = await freePort();
    const s = await serveChild(['--port', String(port), '--data-dir', dir]);
    try {
      const args = ['--data-dir', dir];
      assert.equal((await cli(['partition', 'add', 'launchvault', ...args])).code, 0);
      const add = await cli([
        'client',
        'add',
        'app',
        '--auth',
        'none',
        '--redirect-uri',
        'https://app.example/cb',
        ...args,
      ]);
      assert.equal(add.code, 0, add.stderr);
      const r = await cli(['launch', 'create', '--partition', 'launchvault', '--client', 'app', ...args]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout) as { iss: string }).iss, `https://localhost:${port}/fhir/launchvault`);
    } finally {
      await s.stop();
    }
  });
});
