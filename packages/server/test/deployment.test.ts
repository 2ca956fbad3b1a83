import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { formOf, LoginDriver, viewerAuthorizeUrl } from './helpers/login-driver.ts';
import { addPerson } from './helpers/people.ts';
import { freePort, startPlatform, type TestPlatform } from './helpers/platform.ts';
import { BIN, withStore } from './helpers/serve.ts';
import { postgresUrlFor, TEST_STORE } from './helpers/store.ts';

// What a load balancer and an operator rely on (issue 11): health probes, the documented behaviour when
// Redis is away, and the schema commands.
const run = promisify(execFile);

describe('health probes for load balancers', () => {
  let p: TestPlatform;
  before(async () => {
    p = await startPlatform();
  });
  after(() => p.stop());

  test('/healthz and /readyz answer without a token and say nothing an attacker could use', async () => {
    const health = await p.fetch(`${p.base}/healthz`, { dispatcher: p.agent() });
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok' });
    const ready = await p.fetch(`${p.base}/readyz`, { dispatcher: p.agent() });
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ok', checks: { database: 'ok' } });
    assert.equal(ready.headers.get('cache-control'), 'no-store');
  });
});

describe('Redis configured but unreachable', () => {
  let p: TestPlatform;
  let caller: Caller;
  before(async () => {
    // A port nothing listens on: Redis is "down" from the first request.
    p = await startPlatform({}, { env: { CAREVAULT_REDIS_URL: `redis://127.0.0.1:${await freePort()}` } });
    await partition(p, 'rv');
    caller = await secretClient(p, 'svc', 'system/*.cruds');
    await grant(p, { partition: 'rv', client: 'svc', scope: 'system/*.cruds' });
    await addPerson(p, 'rita', 'correct horse battery');
    await p.register('viewer', {
      auth: 'none',
      redirectUri: ['https://viewer.example/cb'],
      scope: 'openid fhirUser user/*.rs',
    });
  });
  after(() => p.stop());

  test('rate limits fail open: FHIR requests are still served', async () => {
    const r = await fhir(p, caller, 'POST', '/rv/Patient', { resourceType: 'Patient' });
    assert.equal(r.status, 201);
  });

  test('login fails closed: 503, because failed attempts could not be counted', async () => {
    const d = new LoginDriver(new URL(p.base).origin, p.agent());
    const page = await d.follow(viewerAuthorizeUrl(p.base, `${p.base}/fhir`));
    assert.ok(!(page instanceof URL));
    const form = formOf(page.html);
    assert.ok(form, 'the login page is shown');
    const res = await d.request(new URL(form.action, p.base).href, {
      method: 'POST',
      body: new URLSearchParams({ csrf: form.csrf, username: 'rita', password: 'correct horse battery' }).toString(),
    });
    assert.equal(res.status, 503);
    assert.match(await res.text(), /temporarily unavailable/);
  });

  test('/readyz names Redis as down', async () => {
    const ready = await p.fetch(`${p.base}/readyz`, { dispatcher: p.agent() });
    assert.equal(ready.status, 503);
    assert.deepEqual(await ready.json(), { status: 'unavailable', checks: { database: 'ok', redis: 'down' } });
  });
});

describe('carevault db migrate / db status', () => {
  const dir = mkdtempSync(join(tmpdir(), 'carevault-db-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const db = async (...args: string[]) => {
    try {
      const { stdout } = await run(process.execPath, [BIN, 'db', ...args], {
        timeout: 60_000,
        env: withStore(['--data-dir', dir]),
      });
      return { code: 0, stdout, stderr: '' };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

  test('on SQLite they say the embedded store migrates itself', {
    skip: TEST_STORE !== 'sqlite' && 'SQLite run only',
  }, async () => {
    const r = await db('status');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: the embedded SQLite store migrates itself/);
  });

  test('on PostgreSQL: pending before, two migrations started together apply it once, nothing pending after', {
    skip: TEST_STORE !== 'postgres' && 'PostgreSQL run only',
  }, async () => {
    const env = { ...process.env, CAREVAULT_DATABASE_URL: postgresUrlFor(dir) };
    const cmd = async (sub: string) =>
      JSON.parse((await run(process.execPath, [BIN, 'db', sub], { timeout: 60_000, env })).stdout) as {
        applied: { version: number }[];
        pending: { version: number }[];
        appliedNow?: number[];
      };
    const before = await cmd('status');
    assert.equal(before.applied.length, 0);
    assert.ok(before.pending.length >= 1);
    const [a, b] = await Promise.all([cmd('migrate'), cmd('migrate')]);
    assert.deepEqual(a.pending, []);
    assert.deepEqual(b.pending, []);
    const after = await cmd('status');
    assert.deepEqual(
      after.applied.map((m) => m.version),
      before.pending.map((m) => m.version),
    );
  });

  test('an unreachable database: one line naming it without its password, exit 1', async () => {
    const r = await run(process.execPath, [BIN, 'db', 'status'], {
      timeout: 60_000,
      env: { ...process.env, CAREVAULT_DATABASE_URL: 'postgres://carevault:s3cret-pw@127.0.0.1:1/none' },
    }).catch((e: { code: number; stderr: string }) => e);
    assert.equal((r as { code: number }).code, 1);
    const stderr = (r as { stderr: string }).stderr.trim();
    assert.equal(stderr.split('\n').length, 1, stderr);
    assert.match(
      stderr,
      /^error: cannot connect to PostgreSQL at postgres:\/\/carevault@127\.0\.0\.1:1\/none \(ECONNREFUSED\)$/,
    );
    assert.doesNotMatch(stderr, /s3cret/);
  });

  test('a pool size that is not a number of connections is refused in one line', async () => {
    const r = await run(process.execPath, [BIN, 'partition', 'list', '--data-dir', dir], {
      timeout: 60_000,
      env: { ...withStore(['--data-dir', dir]), CAREVAULT_DATABASE_POOL_SIZE: '0' },
    }).catch((e: { code: number; stderr: string }) => e);
    assert.equal((r as { code: number }).code, 1);
    assert.match(
      (r as { stderr: string }).stderr,
      /^error: CAREVAULT_DATABASE_POOL_SIZE must be an integer between 2 and 500/m,
    );
  });
});
