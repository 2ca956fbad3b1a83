import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Agent, fetch } from 'undici';
import { MemoryRateLimiter } from '../src/http/rate-limit.ts';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { freePort, startPlatform, type TestPlatform } from './helpers/platform.ts';
import { withStore } from './helpers/serve.ts';

// Issue 5 §4 (J50, seed 000 "handle the rate limit exceptions"): token buckets per client and per address,
// 429 + Retry-After in each endpoint's dialect; shared through Redis by several server processes.

const platforms: TestPlatform[] = [];
after(async () => {
  for (const p of platforms) await p.stop();
});

describe('token buckets', () => {
  test('a burst up to the size passes, then one request per refill interval', async () => {
    const b = new MemoryRateLimiter({ count: 3, windowMs: 3000 });
    const t0 = 1_000_000;
    for (let i = 0; i < 3; i++) assert.equal((await b.take('k', t0)).allowed, true);
    const refused = await b.take('k', t0);
    assert.equal(refused.allowed, false);
    assert.equal(refused.retryAfterSeconds, 1);
    assert.equal((await b.take('other', t0)).allowed, true, 'keys are independent');
    assert.equal((await b.take('k', t0 + 999)).allowed, false);
    assert.equal((await b.take('k', t0 + 1000)).allowed, true);
  });
});

describe('429 + Retry-After from the running platform', () => {
  test('per client on FHIR (OperationOutcome throttled), per address on the token endpoint (OAuth JSON)', async () => {
    const p = await startPlatform({ rateLimit: '4/min' });
    platforms.push(p);
    await partition(p, 'v1');
    // Minting the token is the first request from this address; three more fit, the fifth does not.
    const c: Caller = await secretClient(p, 'busy', 'system/*.rs');
    await grant(p, { partition: 'v1', client: 'busy', scope: 'system/*.rs' });
    const statuses: number[] = [];
    let last: Awaited<ReturnType<typeof fhir>> | undefined;
    for (let i = 0; i < 6; i++) {
      last = await fhir(p, c, 'GET', '/v1/Patient');
      statuses.push(last.status);
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 429, 429], 'the client has its own bucket of 4');
    assert.ok(Number(last?.headers.get('retry-after')) >= 1);
    assert.equal(((last?.json.issue ?? []) as { code: string }[])[0]?.code, 'throttled');
    const other = await secretClient(p, 'quiet', 'system/*.rs');
    await grant(p, { partition: 'v1', client: 'quiet', scope: 'system/*.rs' });
    assert.equal((await fhir(p, other, 'GET', '/v1/Patient')).status, 200, 'another client has its own bucket');
    // The address bucket (4) has paid for two token requests; two more fit, then 429.
    const tokenRequest = () =>
      p.fetch(p.tokenUrl, {
        method: 'POST',
        dispatcher: p.agent(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=client_credentials&client_id=nobody',
      });
    for (let i = 0; i < 2; i++) {
      const r = await tokenRequest();
      assert.notEqual(r.status, 429);
      await r.arrayBuffer();
    }
    const token = await tokenRequest();
    assert.equal(token.status, 429);
    assert.ok(Number(token.headers.get('retry-after')) >= 1);
    assert.equal(((await token.json()) as { error: string }).error, 'temporarily_unavailable');
  });
});

const BIN = fileURLToPath(new URL('../bin/carevault.js', import.meta.url));
const REDIS = process.env.CAREVAULT_TEST_REDIS_URL;

describe('Redis-backed limits', { skip: REDIS ? false : 'skipped: no Redis (set CAREVAULT_TEST_REDIS_URL)' }, () => {
  test('two server processes on one Redis share the buckets', async () => {
    const env = {
      CAREVAULT_REDIS_URL: REDIS as string,
      CAREVAULT_REDIS_PREFIX: `carevault-test-${randomBytes(6).toString('hex')}:`,
      CAREVAULT_RATE_LIMIT: '6/min',
    };
    // Process 1: in this test process. Process 2: `carevault serve` as a child.
    const p1 = await startPlatform({}, { env });
    platforms.push(p1);
    const dataDir = mkdtempSync(join(tmpdir(), 'carevault-redis-'));
    const port = await freePort();
    const child = spawn(process.execPath, [BIN, 'serve', '--port', String(port), '--data-dir', dataDir], {
      env: withStore(['--data-dir', dataDir], { ...process.env, ...env, CAREVAULT_LOG_LEVEL: 'warn' }),
    });
    let stdout = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    const exited = new Promise((r) => child.on('exit', r));
    try {
      const deadline = Date.now() + 30_000;
      while (!stdout.includes('carevault is running') && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      const agent2 = new Agent({ connect: { ca: readFileSync(join(dataDir, 'pki', 'ca.pem')) } });
      const hit = async (base: string, dispatcher: Agent) => {
        const res = await fetch(`${base}/fhir/any/metadata`, { dispatcher });
        await res.arrayBuffer();
        return res.status;
      };
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) {
        statuses.push(await hit(p1.base, p1.agent()));
        statuses.push(await hit(`https://localhost:${port}`, agent2));
      }
      // Six tokens for 127.0.0.1 across both processes, not six each.
      assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200, 429, 429]);
      await agent2.close();
    } finally {
      child.kill('SIGTERM');
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
