import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { Agent, fetch } from 'undici';
import { StoreUnavailableError } from '../src/store/errors.ts';
import { openStore } from '../src/store/index.ts';
import { addPartition } from '../src/vault/partitions.ts';
import { formOf, LoginDriver, viewerAuthorizeUrl } from './helpers/login-driver.ts';
import { freePort } from './helpers/platform.ts';
import { pgClientFor } from './helpers/raw-db.ts';
import { BIN, type ServeChild, serveChild, withStore } from './helpers/serve.ts';
import { postgresUrlFor, TEST_STORE } from './helpers/store.ts';

// Stateless nodes (issue 11): two `carevault serve` processes on one PostgreSQL schema, one Redis and one data
// directory (keys, CA) are interchangeable. Only in the PostgreSQL run: SQLite is one process by design.
const REDIS = process.env.CAREVAULT_TEST_REDIS_URL;
const skip =
  TEST_STORE !== 'postgres' ? 'multi-node needs PostgreSQL' : !REDIS ? 'needs CAREVAULT_TEST_REDIS_URL' : false;
const run = promisify(execFile);

let dataDir: string;
let lb: string;
let ca: string;
let agent: Agent;
let secret: string;
let env: NodeJS.ProcessEnv;
const nodes: ServeChild[] = [];
const ports: number[] = [];
const VAULT = 'shared_vault';

async function admin(...args: string[]): Promise<string> {
  const full = [...args, '--data-dir', dataDir];
  return (await run(process.execPath, [BIN, ...full], { timeout: 60_000, env: withStore(full, env) })).stdout;
}

async function startNode(extraEnv: NodeJS.ProcessEnv = {}): Promise<{ node: ServeChild; url: string }> {
  const port = await freePort();
  const node = await serveChild(['--port', String(port), '--base-url', lb, '--data-dir', dataDir], {
    env: { ...withStore(['--data-dir', dataDir], env), ...extraEnv },
  });
  assert.match(node.output().stdout, /carevault is running/, node.output().stderr);
  nodes.push(node);
  ports.push(port);
  return { node, url: `https://127.0.0.1:${port}` };
}

async function call(base: string, method: string, path: string, token: string, body?: unknown, headers = {}) {
  const res = await fetch(`${base}${path}`, {
    method,
    dispatcher: agent,
    headers: {
      authorization: `Bearer ${token}`,
      accept: 'application/fhir+json',
      ...(body ? { 'content-type': 'application/fhir+json' } : {}),
      ...headers,
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

async function form(base: string, path: string, body: Record<string, string>, basic?: string) {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    dispatcher: agent,
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      ...(basic ? { authorization: `Basic ${Buffer.from(basic).toString('base64')}` } : {}),
    },
    body: new URLSearchParams(body).toString(),
  });
  return { status: res.status, json: (await res.json().catch(() => ({}))) as Record<string, string> };
}

const token = async (base: string) => {
  const r = await form(base, '/oauth/token', { grant_type: 'client_credentials' }, `svc:${secret}`);
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json.access_token as string;
};

let A: string;
let B: string;
let nodeA: ServeChild;

describe('two nodes on one PostgreSQL + Redis', { skip }, () => {
  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'carevault-nodes-'));
    lb = `https://localhost:${await freePort()}`;
    env = {
      ...process.env,
      CAREVAULT_REDIS_URL: REDIS,
      CAREVAULT_REDIS_PREFIX: `cv-nodes-${randomBytes(6).toString('hex')}:`,
      CAREVAULT_LOG_LEVEL: 'warn',
    };
    secret = (
      JSON.parse(await admin('client', 'add', 'svc', '--auth', 'client_secret_basic', '--scope', 'system/*.cruds')) as {
        client_secret: string;
      }
    ).client_secret;
    await admin('partition', 'add', VAULT);
    await admin('grant', 'add', '--partition', VAULT, '--client', 'svc', '--scope', 'system/*.cruds');
    // Both nodes start at once: the schema migration runs once, under its advisory lock.
    [{ node: nodeA, url: A }, { url: B }] = await Promise.all([startNode(), startNode()]);
    ca = readFileSync(join(dataDir, 'pki', 'ca.pem'), 'utf8');
    agent = new Agent({ connect: { ca, servername: 'localhost' }, connections: 16 });
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await agent?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('a token from node A works at node B; revoked at A, it is refused at B within 1 s', async () => {
    const t = await token(A);
    const created = await call(B, 'POST', `/fhir/${VAULT}/Patient`, t, { resourceType: 'Patient', gender: 'other' });
    assert.equal(created.status, 201);
    const read = await call(A, 'GET', `/fhir/${VAULT}/Patient/${created.json.id}`, t);
    assert.equal(read.status, 200);
    const revoked = await form(A, '/oauth/revoke', { token: t }, `svc:${secret}`);
    assert.equal(revoked.status, 200);
    const started = Date.now();
    let status = 0;
    while (Date.now() - started < 1000) {
      status = (await call(B, 'GET', `/fhir/${VAULT}/Patient/${created.json.id}`, t)).status;
      if (status === 401) break;
    }
    assert.equal(status, 401, 'node B refuses the token node A revoked');
  });

  test('a client assertion used at one node is refused at the other (jti replay → invalid_client)', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwks = join(dataDir, 'jwks.json');
    writeFileSync(jwks, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] }));
    await admin('client', 'add', 'jwt-svc', '--auth', 'private_key_jwt', '--jwks', jwks, '--scope', 'system/*.rs');
    const assertion = await new SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer('jwt-svc')
      .setSubject('jwt-svc')
      .setAudience(lb)
      .setIssuedAt()
      .setExpirationTime('2m')
      .sign(privateKey);
    const body = {
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    };
    const first = await form(A, '/oauth/token', body);
    assert.equal(first.status, 200, JSON.stringify(first.json));
    const replay = await form(B, '/oauth/token', body);
    assert.equal(replay.status, 401);
    assert.equal(replay.json.error, 'invalid_client');
  });

  test('login throttling is shared: failures at node A lock the guesser out at node B', async () => {
    await admin('user', 'add', 'nina', '--password', 'correct-horse-battery');
    await admin(
      'client',
      'add',
      'viewer',
      '--auth',
      'none',
      '--redirect-uri',
      'https://viewer.example/cb',
      '--scope',
      'openid fhirUser user/*.rs',
    );
    // Each login page is opened first, so that the attempt right after the failures is not slowed by it (the
    // first wait after the free attempts is 1 s).
    const loginPage = async (base: string) => {
      const d = new LoginDriver(new URL(base).origin, agent);
      const page = await d.follow(viewerAuthorizeUrl(base, `${lb}/fhir`));
      assert.ok(!(page instanceof URL), 'the login page is shown');
      const f = formOf(page.html);
      assert.ok(f, page.html.slice(0, 300));
      return (password: string) =>
        d.request(new URL(f.action, base).href, {
          method: 'POST',
          body: new URLSearchParams({ csrf: f.csrf, username: 'nina', password }).toString(),
        });
    };
    const pages = await Promise.all([...Array.from({ length: 5 }, () => loginPage(A)), loginPage(B)]);
    const atB = pages.pop() as Awaited<ReturnType<typeof loginPage>>;
    for (const [i, submit] of pages.entries()) assert.equal((await submit(`guess-${i}`)).status, 401);
    const throttled = await atB('correct-horse-battery');
    assert.equal(throttled.status, 429, 'node B counts the failures node A saw');
  });

  test('a conditional create raced through both nodes yields one resource', async () => {
    const t = await token(A);
    const identifier = `race-${randomUUID()}`;
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        call(
          i % 2 ? A : B,
          'POST',
          `/fhir/${VAULT}/Patient`,
          t,
          { resourceType: 'Patient', identifier: [{ system: 'urn:race', value: identifier }] },
          { 'if-none-exist': `identifier=urn:race|${identifier}` },
        ),
      ),
    );
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200, 200, 200, 200, 201]);
    const found = await call(B, 'GET', `/fhir/${VAULT}/Patient?identifier=urn:race|${identifier}&_summary=count`, t);
    assert.equal(found.json.total, 1);
  });

  test('two updates with the same If-Match through both nodes: one 200, one 412', async () => {
    const t = await token(A);
    const created = await call(A, 'POST', `/fhir/${VAULT}/Patient`, t, { resourceType: 'Patient' });
    const id = created.json.id as string;
    for (let round = 0; round < 3; round++) {
      const current = await call(A, 'GET', `/fhir/${VAULT}/Patient/${id}`, t);
      const etag = current.headers.get('etag') as string;
      const results = await Promise.all(
        [A, B].map((base, k) =>
          call(
            base,
            'PUT',
            `/fhir/${VAULT}/Patient/${id}`,
            t,
            { resourceType: 'Patient', id, gender: k ? 'male' : 'female' },
            {
              'if-match': etag,
            },
          ),
        ),
      );
      assert.deepEqual(results.map((r) => r.status).sort(), [200, 412]);
    }
  });

  test('a node whose clock lags stamps what it commits later as later: a poller resuming at the last lastUpdated misses nothing', async () => {
    // Versions are stamped with the database's clock under the write lock. Stamped with the node's own clock, a
    // version written at node C after one at node A came out 5 s older, and `_lastUpdated=gt<A's>` skipped it.
    const lag = join(dataDir, 'lagging-clock.mjs');
    writeFileSync(lag, 'const real = Date.now;\nDate.now = () => real() - 5000;\n');
    const { url: C } = await startNode({ NODE_OPTIONS: `--import ${lag}` });
    const [tA, tC] = [await token(A), await token(C)];
    const family = `Clock${randomBytes(4).toString('hex')}`;
    const first = await call(A, 'POST', `/fhir/${VAULT}/Patient`, tA, { resourceType: 'Patient', name: [{ family }] });
    const second = await call(C, 'POST', `/fhir/${VAULT}/Patient`, tC, { resourceType: 'Patient', name: [{ family }] });
    assert.deepEqual([first.status, second.status], [201, 201]);
    const [s1, s2] = [first, second].map((r) => (r.json.meta as { lastUpdated: string }).lastUpdated) as [
      string,
      string,
    ];
    assert.ok(Date.parse(s2) > Date.parse(s1), `written later at the lagging node, stamped ${s2}, before ${s1}`);
    for (const [base, t] of [
      [A, tA],
      [C, tC],
    ] as const) {
      const polled = await call(base, 'GET', `/fhir/${VAULT}/Patient?family=${family}&_lastUpdated=gt${s1}`, t);
      const found = (polled.json.entry as { resource: { id: string } }[] | undefined)?.map((e) => e.resource.id);
      assert.deepEqual(found, [second.json.id], `polled at ${base === A ? 'A' : 'C'}`);
    }
  });

  test('concurrent creates through both nodes, then `audit verify` walks one unbroken chain', async () => {
    const t = await token(A);
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        call(i % 2 ? A : B, 'POST', `/fhir/${VAULT}/Observation`, t, {
          resourceType: 'Observation',
          status: 'final',
          code: { text: `concurrent ${i}` },
        }),
      ),
    );
    assert.ok(results.every((r) => r.status === 201));
    const verified = JSON.parse(await admin('audit', 'verify')) as { ok: boolean; events: number };
    assert.equal(verified.ok, true);
    assert.ok(verified.events >= 60);
  });

  test('a Bulk Data export asked at node A is answered at node B: status, manifest and files', async () => {
    const t = await token(A);
    for (let i = 0; i < 5; i++)
      await call(A, 'POST', `/fhir/${VAULT}/Condition`, t, {
        resourceType: 'Condition',
        subject: { reference: 'Patient/nobody' },
        code: { text: `exported ${i}` },
      });
    const kickOff = await call(A, 'GET', `/fhir/${VAULT}/$export?_type=Condition`, t, undefined, {
      prefer: 'respond-async',
    });
    assert.equal(kickOff.status, 202, JSON.stringify(kickOff.json));
    // The URLs name the load balancer; node B is asked directly.
    const onB = (url: string) => url.replace(lb, B);
    const status = onB(kickOff.headers.get('content-location') as string);
    type Manifest = { output: { type: string; url: string; count: number }[] };
    let manifest: Manifest | undefined;
    for (let i = 0; i < 200 && !manifest; i++) {
      const r = await call(status, 'GET', '', t);
      if (r.status === 200) manifest = r.json as unknown as Manifest;
      else await new Promise((resolve) => setTimeout(resolve, r.status === 429 ? 1000 : 50));
    }
    assert.ok(manifest, 'node B answered the manifest');
    const conditions = await call(B, 'GET', `/fhir/${VAULT}/Condition?_summary=count`, t);
    assert.deepEqual(
      manifest.output.map((o) => [o.type, o.count]),
      [['Condition', conditions.json.total]],
    );
    const file = await fetch(onB(manifest.output[0]?.url as string), {
      dispatcher: agent,
      headers: { authorization: `Bearer ${t}` },
    });
    assert.equal(file.status, 200);
    const lines = (await file.text()).trim().split('\n');
    assert.equal(lines.length, conditions.json.total);
    assert.ok(lines.every((l) => (JSON.parse(l) as { resourceType: string }).resourceType === 'Condition'));
  });

  test('reads and searches through both nodes at once: their events, hashed by PostgreSQL, form one unbroken chain', async () => {
    const t = await token(A);
    const created = await call(A, 'POST', `/fhir/${VAULT}/Patient`, t, {
      resourceType: 'Patient',
      name: [{ family: 'Müller-Łukasiewicz', given: ['Zoë'] }],
    });
    assert.equal(created.status, 201);
    const before = (JSON.parse(await admin('audit', 'verify')) as { events: number }).events;
    // Each node's groups of read events land between the other's: every group is chained onto a head another
    // node wrote. Non-ASCII queries (two- and four-byte UTF-8) are hashed from the same bytes on both sides.
    const results = await Promise.all(
      Array.from({ length: 80 }, (_, i) =>
        i % 4 === 3
          ? call(
              i % 2 ? A : B,
              'GET',
              `/fhir/${VAULT}/Patient?family=${encodeURIComponent(i % 8 === 3 ? 'Müller-Łukasiewicz' : 'Zoë 🩺')}`,
              t,
            )
          : call(i % 2 ? A : B, 'GET', `/fhir/${VAULT}/Patient/${created.json.id}`, t),
      ),
    );
    assert.ok(results.every((r) => r.status === 200));
    const verified = JSON.parse(await admin('audit', 'verify')) as { ok: boolean; events: number };
    assert.equal(verified.ok, true);
    assert.equal(verified.events, before + 80, 'one event per read and search, none lost or doubled');
  });

  test('row-level security: the vault role sees only the partition its transaction names', async () => {
    const client = await pgClientFor(dataDir);
    try {
      const count = async (partition: string | undefined) => {
        await client.query('BEGIN');
        await client.query('SET LOCAL ROLE carevault_vault');
        if (partition) await client.query("SELECT set_config('carevault.partition', $1, true)", [partition]);
        // No partition filter on purpose: the policy alone decides what is visible.
        const r = await client.query('SELECT count(*)::int AS n, count(DISTINCT partition)::int AS p FROM resources');
        await client.query('ROLLBACK');
        return r.rows[0] as { n: number; p: number };
      };
      const own = await count(VAULT);
      assert.ok(own.n > 0);
      assert.equal(own.p, 1);
      assert.deepEqual(await count(undefined), { n: 0, p: 0 });
      assert.deepEqual(await count('another_vault'), { n: 0, p: 0 });
      await client.query('BEGIN');
      await client.query('SET LOCAL ROLE carevault_vault');
      await client.query("SELECT set_config('carevault.partition', 'another_vault', true)");
      await assert.rejects(
        client.query(
          `INSERT INTO resources (partition, type, id, version, last_updated, content) VALUES ('${VAULT}', 'Patient', 'x', 1, '2026-01-01T00:00:00Z', '{}')`,
        ),
        /row-level security/,
      );
      await client.query('ROLLBACK');
    } finally {
      await client.end();
    }
  });

  test('the read pool: one connection reused for reads of two vaults is confined to the vault of each read', async () => {
    // One connection in each pool: every read below runs on the same one, alternating between vaults.
    const store = await openStore({ dataDir, databaseUrl: postgresUrlFor(dataDir), poolSize: 1 });
    try {
      await addPartition(store, 'second_vault');
      const content = JSON.stringify({ resourceType: 'Patient', id: 'only-here' });
      await store.resources.transaction('second_vault', (tx) =>
        tx.write({
          type: 'Patient',
          id: 'only-here',
          version: 1,
          lastUpdated: new Date().toISOString(),
          method: 'PUT',
          content,
          index: { token: [], string: [], reference: [], date: [], number: [], quantity: [], uri: [], composite: [] },
        }),
      );
      const [first] = await store.resources.scan(VAULT, undefined, 1);
      assert.ok(first);
      for (let i = 0; i < 3; i++) {
        assert.equal((await store.resources.current('second_vault', 'Patient', 'only-here'))?.content, content);
        assert.equal((await store.resources.current(VAULT, first.type, first.id))?.id, first.id);
        const query = { type: 'Patient', filters: [], sort: [], limit: 10, offset: 0, total: false };
        const found = await store.resources.search('second_vault', query);
        assert.deepEqual(
          found.matches.map((m) => m.id),
          ['only-here'],
        );
      }
    } finally {
      await store.close();
    }
  });

  test("a node paused while it holds the write lock holds up the other nodes' writes only until the database ends its session", {
    timeout: 60_000,
  }, async () => {
    // A node whose transactions may wait 1 s between statements, then paused (SIGSTOP) while a transaction
    // Bundle of its holds the write lock — as a frozen VM or a node cut off without its connection closing.
    const { node: paused } = await startNode({ CAREVAULT_DATABASE_TX_IDLE_TIMEOUT: '1' });
    const P = `https://127.0.0.1:${ports[ports.length - 1]}`;
    const t = await token(P);
    const db = await pgClientFor(dataDir);
    const holder = async () =>
      (
        await db.query(
          `SELECT a.pid, a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1`,
          [`carevault ${hostname()} ${paused.child.pid}`],
        )
      ).rows[0] as { pid: number; state: string } | undefined;
    const bundle = (tag: string) => ({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: Array.from({ length: 2000 }, () => ({
        request: { method: 'POST', url: 'Observation' },
        resource: {
          resourceType: 'Observation',
          status: 'final',
          meta: { tag: [{ system: 'urn:paused', code: tag }] },
          code: { text: 'paused' },
        },
      })),
    });
    try {
      let caught: { tag: string; answer: Promise<{ status: number }>; backend: number } | undefined;
      for (let attempt = 0; attempt < 20 && !caught; attempt++) {
        const tag = `p${attempt}-${randomBytes(3).toString('hex')}`;
        const answer = call(P, 'POST', `/fhir/${VAULT}`, t, bundle(tag)).catch(() => ({ status: 0 }));
        let done = false;
        void answer.then(() => {
          done = true;
        });
        while (!done) {
          const held = await holder();
          if (!held) continue;
          paused.child.kill('SIGSTOP');
          // Still holding it a moment later, idle inside its transaction: nothing it sent before the pause
          // (a COMMIT) is left for the database to do.
          await new Promise((r) => setTimeout(r, 200));
          const still = await holder();
          if (still?.state === 'idle in transaction') caught = { tag, answer, backend: still.pid };
          else paused.child.kill('SIGCONT');
          break;
        }
        if (!caught) await answer;
      }
      assert.ok(caught, 'the paused node was caught holding the write lock');
      const started = performance.now();
      const other = await call(B, 'POST', `/fhir/${VAULT}/Patient`, t, { resourceType: 'Patient' });
      assert.equal(other.status, 201);
      assert.ok(performance.now() - started < 15_000, 'the other node wrote once the session was ended');
      const gone = await db.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [caught.backend]);
      assert.equal(gone.rowCount, 0, "the paused node's session was ended");
      paused.child.kill('SIGCONT');
      // Its Bundle is answered 503 (nothing of it was acknowledged) and is wholly absent.
      assert.equal((await caught.answer).status, 503);
      const found = await call(B, 'GET', `/fhir/${VAULT}/Observation?_tag=urn:paused|${caught.tag}&_summary=count`, t);
      assert.equal(found.json.total, 0);
      // The node that woke up writes again without a restart.
      assert.equal((await call(P, 'POST', `/fhir/${VAULT}/Patient`, t, { resourceType: 'Patient' })).status, 201);
    } finally {
      paused.child.kill('SIGCONT');
      await db.end();
    }
  });

  test('kill -9 of a node mid-ingest: every acknowledged write is present, every Bundle whole or absent', async () => {
    const t = await token(A);
    const acknowledged: string[] = [];
    const tags: string[] = [];
    let stop = false;
    const bundle = (tag: string) => ({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: Array.from({ length: 20 }, (_, i) => ({
        fullUrl: `urn:uuid:${randomUUID()}`,
        request: { method: 'POST', url: 'Observation' },
        resource: {
          resourceType: 'Observation',
          status: 'final',
          meta: { tag: [{ system: 'urn:ingest', code: tag }] },
          code: { text: `entry ${i}` },
        },
      })),
    });
    const loop = async () => {
      while (!stop) {
        const tag = `b${tags.length}-${randomBytes(3).toString('hex')}`;
        tags.push(tag);
        try {
          const r = await call(A, 'POST', `/fhir/${VAULT}`, t, bundle(tag));
          if (r.status === 200) acknowledged.push(tag);
        } catch {
          return; // the node is gone
        }
      }
    };
    const loops = [loop(), loop(), loop()];
    await new Promise((r) => setTimeout(r, 1500));
    nodeA.child.kill('SIGKILL');
    await nodeA.exited;
    stop = true;
    await Promise.all(loops);
    assert.ok(acknowledged.length > 0, 'some bundles were acknowledged before the kill');
    for (const tag of tags) {
      const found = await call(B, 'GET', `/fhir/${VAULT}/Observation?_tag=urn:ingest|${tag}&_summary=count`, t);
      const total = found.json.total as number;
      if (acknowledged.includes(tag)) assert.equal(total, 20, `acknowledged bundle ${tag} is whole`);
      else assert.ok(total === 0 || total === 20, `bundle ${tag} is whole or absent, found ${total}`);
    }
    const verified = JSON.parse(await admin('audit', 'verify')) as { ok: boolean };
    assert.equal(verified.ok, true);
  });
});

/** A loopback TCP hop in front of PostgreSQL that can be cut (every connection dropped, new ones refused). */
class CuttableHop {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  constructor(
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}
  async open(): Promise<void> {
    this.server = createServer((s) => {
      const up = tcpConnect(this.target.port, this.target.host);
      for (const x of [s, up]) {
        this.sockets.add(x);
        x.on('close', () => this.sockets.delete(x));
        x.on('error', () => {});
      }
      s.pipe(up).pipe(s);
    });
    await new Promise<void>((r) => this.server?.listen(this.port, '127.0.0.1', r));
  }
  async cut(): Promise<void> {
    const closed = new Promise((r) => this.server?.close(r));
    for (const s of this.sockets) s.destroy();
    await closed;
  }
}

/** The PostgreSQL URL of `dataDir`'s schema, directly and through a hop in front of it that can be cut. */
async function hopFor(dataDir: string): Promise<{ real: URL; hop: CuttableHop; viaHop: URL }> {
  const real = new URL(postgresUrlFor(dataDir));
  const hop = new CuttableHop(await freePort(), { host: real.hostname, port: Number(real.port || 5432) });
  await hop.open();
  const viaHop = new URL(real.href);
  viaHop.port = String(hop.port);
  return { real, hop, viaHop };
}

describe('database lost while serving', { skip: TEST_STORE !== 'postgres' && 'needs PostgreSQL' }, () => {
  test('503 transient OperationOutcome while it is gone, nothing half-written, recovery without restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'carevault-dblost-'));
    const { hop, viaHop } = await hopFor(dir);
    const localEnv = { ...process.env, CAREVAULT_DATABASE_URL: viaHop.href, CAREVAULT_LOG_LEVEL: 'error' };
    const cli = async (...args: string[]) =>
      (await run(process.execPath, [BIN, ...args, '--data-dir', dir], { timeout: 60_000, env: localEnv })).stdout;
    const { client_secret } = JSON.parse(
      await cli('client', 'add', 'svc', '--auth', 'client_secret_basic', '--scope', 'system/*.cruds'),
    ) as { client_secret: string };
    await cli('partition', 'add', 'v');
    await cli('grant', 'add', '--partition', 'v', '--client', 'svc', '--scope', 'system/*.cruds');
    const port = await freePort();
    const node = await serveChild(['--port', String(port), '--data-dir', dir], { env: localEnv });
    const base = `https://127.0.0.1:${port}`;
    const a = new Agent({ connect: { ca: readFileSync(join(dir, 'pki', 'ca.pem'), 'utf8'), servername: 'localhost' } });
    const previous = agent;
    agent = a;
    secret = client_secret;
    try {
      const t = await token(base);
      assert.equal((await call(base, 'POST', '/fhir/v/Patient', t, { resourceType: 'Patient' })).status, 201);
      await hop.cut();
      const down = await call(base, 'POST', '/fhir/v/Patient', t, { resourceType: 'Patient', gender: 'female' });
      assert.equal(down.status, 503);
      assert.equal((down.json.issue as { code: string }[])[0]?.code, 'transient');
      assert.ok(down.headers.get('retry-after'));
      assert.doesNotMatch(JSON.stringify(down.json), /postgres|ECONN|127\.0\.0\.1/i);
      const ready = await fetch(`${base}/readyz`, { dispatcher: a });
      assert.equal(ready.status, 503);
      assert.deepEqual(await ready.json(), { status: 'unavailable', checks: { database: 'down' } });
      await hop.open();
      let status = 0;
      for (let i = 0; i < 20 && status !== 200; i++) {
        status = (await fetch(`${base}/readyz`, { dispatcher: a }).then((r) => r.status)) as number;
        if (status !== 200) await new Promise((r) => setTimeout(r, 250));
      }
      assert.equal(status, 200, 'ready again once the database is back');
      const search = await call(base, 'GET', '/fhir/v/Patient?gender=female&_summary=count', t);
      assert.equal(search.json.total, 0, 'the write refused with 503 left nothing behind');
      assert.equal((await call(base, 'POST', '/fhir/v/Patient', t, { resourceType: 'Patient' })).status, 201);
      assert.equal((await fetch(`${base}/healthz`, { dispatcher: a })).status, 200);

      // Lost in the middle of a batch: the entries written are reported as written, the others 503 — not a
      // whole-batch 503 that a client would take as nothing written and send again.
      const entry = Array.from({ length: 1500 }, () => ({
        request: { method: 'POST', url: 'Patient' },
        resource: { resourceType: 'Patient', identifier: [{ system: 'urn:batch', value: 'lost' }] },
      }));
      const batch = call(base, 'POST', '/fhir/v', t, { resourceType: 'Bundle', type: 'batch', entry });
      const written = async () =>
        (await call(base, 'GET', '/fhir/v/Patient?identifier=urn:batch|lost&_summary=count', t)).json.total as number;
      for (let i = 0; i < 400 && (await written()) === 0; i++) await new Promise((r) => setTimeout(r, 5));
      await hop.cut();
      const answer = await batch;
      await hop.open();
      assert.equal(answer.status, 200, JSON.stringify(answer.json).slice(0, 300));
      const statuses = (answer.json.entry as { response: { status: string } }[]).map((e) => e.response.status);
      const created = statuses.filter((s) => s.startsWith('201')).length;
      assert.ok(created > 0 && created < entry.length, `${created} created`);
      assert.deepEqual(
        statuses.slice(created).map((s) => s.slice(0, 3)),
        Array(entry.length - created).fill('503'),
        'after the first failure every entry is 503',
      );
      let present = -1;
      for (let i = 0; i < 40 && present < 0; i++) {
        present = await written().catch(() => -1);
        if (present < 0) await new Promise((r) => setTimeout(r, 250));
      }
      // Every acknowledged write is there; the one whose commit the cut interrupted may be too.
      assert.ok(present >= created && present <= created + 1, `${present} present, ${created} acknowledged`);
    } finally {
      agent = previous;
      await node.stop();
      await a.close();
      await hop.cut().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('revocations made while a node cannot listen are not missed, before or after it listens again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'carevault-revoked-'));
    const { real, hop, viaHop } = await hopFor(dir);
    const other = await openStore({ dataDir: dir, databaseUrl: real.href });
    const node = await openStore({ dataDir: dir, databaseUrl: viaHop.href });
    const until = async (what: () => Promise<boolean>, ms: number) => {
      const end = Date.now() + ms;
      while (!(await what()) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      return what();
    };
    const exp = Math.floor(Date.now() / 1000) + 600;
    try {
      assert.equal(await node.revocations.isRevoked('never'), false);
      await new Promise((r) => setTimeout(r, 500)); // listening by now
      await other.revocations.revoke('while-listening', exp);
      assert.ok(await until(() => node.revocations.isRevoked('while-listening'), 1000), 'seen within 1 s');
      await hop.cut();
      await other.revocations.revoke('while-cut', exp);
      await hop.open();
      // Answered from the table (not listening yet) or from the mirror (listening again, reloaded) — never from the
      // mirror of the lost connection. A pooled connection whose close the node has not processed yet may refuse
      // with 503 (fail closed) meanwhile; within a second it answers.
      const answer = () =>
        node.revocations.isRevoked('while-cut').then(
          (revoked) => (revoked ? 'revoked' : 'not revoked'),
          (err: unknown) => {
            if (err instanceof StoreUnavailableError) return 'unavailable';
            throw err;
          },
        );
      assert.notEqual(await answer(), 'not revoked');
      assert.ok(await until(async () => (await answer()) === 'revoked', 1000), 'seen within 1 s');
      await new Promise((r) => setTimeout(r, 2500)); // reconnected and reloaded by now
      assert.equal(await node.revocations.isRevoked('while-cut'), true);
      assert.equal(await node.revocations.isRevoked('while-listening'), true);
      assert.equal(await node.revocations.isRevoked('never'), false);
      // Anyone may NOTIFY the channel: what is not a revocation of this schema is ignored, and the node lives on.
      const raw = await pgClientFor(dir);
      await raw.query(`NOTIFY carevault_revoked, 'not json'`);
      await raw.query(`SELECT pg_notify('carevault_revoked', '["another_schema","after",1]')`);
      await raw.end();
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await node.revocations.isRevoked('after'), false);
      await other.revocations.revoke('after', exp);
      assert.ok(await until(() => node.revocations.isRevoked('after'), 1000), 'seen within 1 s after reconnecting');
    } finally {
      await node.close();
      await other.close();
      await hop.cut().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
