import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { openStore } from '../src/store/index.ts';
import { MIGRATIONS } from '../src/store/sqlite/schema.ts';
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

  for (const [name, value, range] of [
    ['CAREVAULT_DATABASE_POOL_SIZE', '0', 'an integer between 2 and 500'],
    ['CAREVAULT_DATABASE_TX_IDLE_TIMEOUT', '0', 'an integer between 1 and 3600'],
    ['CAREVAULT_DATABASE_TX_IDLE_TIMEOUT', '10s', 'an integer between 1 and 3600'],
    ['CAREVAULT_SEARCH_TIMEOUT', '0', 'a number of seconds between 0.01 and 3600'],
    ['CAREVAULT_SEARCH_TIMEOUT', '30s', 'a number of seconds between 0.01 and 3600'],
    ['CAREVAULT_SEARCH_THREADS', '-1', 'an integer between 0 and 64'],
    ['CAREVAULT_MAX_RESPONSE_MB', '0', 'an integer between 1 and 256'],
  ] as const) {
    test(`${name}=${value} is refused in one line`, async () => {
      const r = await run(process.execPath, [BIN, 'partition', 'list', '--data-dir', dir], {
        timeout: 60_000,
        env: { ...withStore(['--data-dir', dir]), [name]: value },
      }).catch((e: { code: number; stderr: string }) => e);
      assert.equal((r as { code: number }).code, 1);
      assert.match(
        (r as { stderr: string }).stderr,
        new RegExp(`^error: ${name} must be ${range.replaceAll('.', '\\.')}`, 'm'),
      );
    });
  }
});

describe('SQLite: a database from before the rowid resource tables', {
  skip: TEST_STORE !== 'sqlite' && 'SQLite run only',
}, () => {
  let p: TestPlatform;
  let client: Caller;
  before(async () => {
    p = await startPlatform();
    await partition(p, 'upgrade');
    client = await secretClient(p, 'upgrader', 'system/*.cruds');
    await grant(p, { partition: 'upgrade', client: 'upgrader', scope: 'system/*.cruds' });
  });
  after(() => p.stop());

  test('is migrated at open: every version, the current ones, searches, deletes and new writes as before', async () => {
    const obs = (value: number) => ({
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
      subject: { reference: 'Patient/upg-1' },
      valueQuantity: { value, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    });
    const put = (path: string, body: unknown) => fhir(p, client, 'PUT', `/upgrade/${path}`, body);
    assert.equal((await put('Patient/upg-1', { resourceType: 'Patient', id: 'upg-1', gender: 'female' })).status, 201);
    assert.equal((await put('Patient/upg-1', { resourceType: 'Patient', id: 'upg-1', gender: 'male' })).status, 200);
    assert.equal((await put('Observation/upg-o1', { ...obs(71), id: 'upg-o1' })).status, 201);
    assert.equal((await put('Observation/upg-o2', { ...obs(72), id: 'upg-o2' })).status, 201);
    assert.equal((await fhir(p, client, 'DELETE', '/upgrade/Observation/upg-o2')).status, 204);

    // The tables as migrations 1–12 made them (clustered on their key), holding what was written above.
    const file = join(p.dataDir, 'carevault.sqlite');
    const old = new Database(file);
    // Set back to before the migration that made them rowid tables: it and every later one run again.
    const rowidMigration = MIGRATIONS.findIndex(
      (m) => typeof m === 'string' && m.includes('CREATE TABLE resources_rowid'),
    );
    old.exec(`
      CREATE TABLE r_old (partition TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
        last_updated TEXT NOT NULL, content TEXT, PRIMARY KEY (partition, type, id)) STRICT, WITHOUT ROWID;
      INSERT INTO r_old SELECT partition, type, id, version, last_updated, content FROM resources;
      DROP TABLE resources;
      ALTER TABLE r_old RENAME TO resources;
      CREATE INDEX resources_type_time ON resources (partition, type, last_updated, id);
      CREATE TABLE v_old (partition TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
        last_updated TEXT NOT NULL, method TEXT NOT NULL, content TEXT,
        PRIMARY KEY (partition, type, id, version)) STRICT, WITHOUT ROWID;
      INSERT INTO v_old SELECT partition, type, id, version, last_updated, method, content FROM resource_versions;
      DROP TABLE resource_versions;
      ALTER TABLE v_old RENAME TO resource_versions;
      CREATE INDEX resource_versions_time ON resource_versions (partition, last_updated);
      CREATE INDEX resource_versions_type_time ON resource_versions (partition, type, last_updated);
      PRAGMA user_version = ${rowidMigration};`);
    old.close();
    // The next process to open the file migrates it (here a second store; the server's statements follow).
    await (await openStore({ dataDir: p.dataDir })).close();
    const check = new Database(file, { readonly: true });
    const shape = check
      .prepare("SELECT name, sql FROM sqlite_master WHERE name IN ('resources', 'resource_versions')")
      .all() as { name: string; sql: string }[];
    check.close();
    assert.equal(shape.length, 2);
    for (const t of shape) assert.doesNotMatch(t.sql, /WITHOUT ROWID/, t.name);

    const read = await fhir(p, client, 'GET', '/upgrade/Patient/upg-1');
    assert.equal(read.json.gender, 'male');
    assert.equal((read.json.meta as { versionId: string }).versionId, '2');
    const history = await fhir(p, client, 'GET', '/upgrade/Patient/upg-1/_history');
    const genders = (history.json.entry as { resource: { gender: string } }[]).map((e) => e.resource.gender);
    assert.deepEqual(genders, ['male', 'female']);
    assert.equal((await fhir(p, client, 'GET', '/upgrade/Observation/upg-o2')).status, 410);
    const found = await fhir(
      p,
      client,
      'GET',
      '/upgrade/Observation?code=http://loinc.org|8867-4&subject=Patient/upg-1',
    );
    assert.deepEqual(
      (found.json.entry as { resource: { id: string } }[]).map((e) => e.resource.id),
      ['upg-o1'],
    );
    // Writes after it: an update makes version 3, a new resource is found by search, a stale If-Match is refused.
    assert.equal((await put('Patient/upg-1', { resourceType: 'Patient', id: 'upg-1', gender: 'other' })).status, 200);
    const created = await fhir(p, client, 'POST', '/upgrade/Observation', obs(73));
    assert.equal(created.status, 201, created.text);
    const again = await fhir(p, client, 'GET', '/upgrade/Observation?subject=Patient/upg-1&_sort=_id');
    assert.equal((again.json.entry as unknown[]).length, 2);
    const stale = await fhir(
      p,
      client,
      'PUT',
      '/upgrade/Patient/upg-1',
      { resourceType: 'Patient', id: 'upg-1' },
      {
        'if-match': 'W/"2"',
      },
    );
    assert.equal(stale.status, 412, stale.text);
    const latest = await fhir(p, client, 'GET', '/upgrade/Patient/upg-1/_history/3');
    assert.equal(latest.json.gender, 'other');
  });
});
