/**
 * Concurrent load over HTTPS (issue 14 §6): 10 keep-alive connections against a `carevault serve` child, beside a
 * bare Node HTTPS server answering a fixed JSON body with the same certificate — the transport ceiling — measured
 * in the same run, interleaved. Phases per round: bare server, carevault reads, carevault mixed
 * (70 % read by id, 15 % search code + subject, 10 % create, 5 % tls_client_auth token). Prints req/s, p50/p99
 * and requests per server CPU-second; then a soak of the mixed load sampling the server's RSS every 10 s.
 *   npm run bench:concurrent     (BENCH_SECONDS per phase, default 10; BENCH_ROUNDS, default 3;
 *                                 BENCH_SOAK_SECONDS, default 300; 0 skips the soak)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { addClient } from '../packages/server/src/admin/clients.ts';
import { withStore } from '../packages/server/src/admin/vault.ts';
import { loadConfig } from '../packages/server/src/config/index.ts';
import { addGrant } from '../packages/server/src/vault/grants.ts';
import { addPartition } from '../packages/server/src/vault/partitions.ts';
import { freePort } from '../packages/server/test/helpers/platform.ts';
import { cpuSeconds, startServer, stopServer } from './lib.ts';

const CONNECTIONS = 10;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SOAK = Number(process.env.BENCH_SOAK_SECONDS ?? 300);

type Req = { path: string; method?: string; headers?: Record<string, string>; body?: string };
interface Result {
  rate: number;
  p50: number;
  p99: number;
  perCpu: number;
  errors: number;
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;

/** CONNECTIONS callers in a closed loop on one keep-alive agent for `seconds`. */
async function drive(base: string, agent: Agent, pid: number, seconds: number, next: () => Req): Promise<Result> {
  const latencies: number[] = [];
  let errors = 0;
  const cpu0 = cpuSeconds(pid);
  const start = performance.now();
  const end = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < end) {
        const r = next();
        const t = performance.now();
        const res = await request(`${base}${r.path}`, {
          method: (r.method ?? 'GET') as 'GET',
          dispatcher: agent,
          headers: r.headers,
          body: r.body,
        });
        await res.body.arrayBuffer();
        if (res.statusCode < 300) latencies.push(performance.now() - t);
        else errors++;
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  const cpu = cpuSeconds(pid) - cpu0;
  latencies.sort((a, b) => a - b);
  return {
    rate: latencies.length / elapsed,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    perCpu: latencies.length / Math.max(cpu, 0.01),
    errors,
  };
}

/** The transport ceiling: Node's https module answering one fixed FHIR JSON body, nothing else. */
async function bareServer(dataDir: string, port: number): Promise<ChildProcess> {
  const pki = join(dataDir, 'pki');
  const code = `
    const https = require('node:https'); const fs = require('node:fs');
    const body = JSON.stringify({ resourceType: 'Observation', id: 'x', status: 'final', code: { text: 'fixed' } });
    https.createServer({ key: fs.readFileSync(${JSON.stringify(join(pki, 'server-key.pem'))}),
      cert: fs.readFileSync(${JSON.stringify(join(pki, 'server.pem'))}), keepAliveTimeout: 60000 },
      (req, res) => { res.writeHead(200, { 'content-type': 'application/fhir+json' }); res.end(body); })
      .listen(${port}, '127.0.0.1', () => console.log('ready'));`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d) => String(d).includes('ready') && resolve());
    child.once('exit', (c) => reject(new Error(`bare server exited ${c}`)));
  });
  return child;
}

const rssMiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

const fmt = (name: string, r: Result) =>
  `  ${name.padEnd(22)} ${r.rate.toFixed(0).padStart(6)} req/s  p50 ${r.p50.toFixed(1).padStart(5)} ms  p99 ${r.p99.toFixed(1).padStart(6)} ms  ${r.perCpu.toFixed(0).padStart(6)} per server CPU-s${r.errors ? `  ${r.errors} errors` : ''}`;

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), 'carevault-bench-concurrent-'));
  const children: ChildProcess[] = [];
  try {
    const port = await freePort();
    const config = loadConfig({ dataDir, port, logLevel: 'warn' }, {});
    const out = await addClient(config, 'bench', {
      auth: 'tls_client_auth',
      scope: 'system/*.cruds',
      out: join(dataDir, 'certs'),
    });
    await withStore(config, async (s) => {
      await addPartition(s, 'bench');
      await addGrant(s, { partition: 'bench', client: 'bench', scope: 'system/*.cruds' });
    });
    // The soak outlives the default 300 s token; one token for the whole run.
    const server = await startServer(dataDir, port, { CAREVAULT_ACCESS_TOKEN_TTL: '3600' });
    children.push(server);
    const pid = server.pid as number;
    const ca = readFileSync(join(dataDir, 'pki', 'ca.pem'));
    const tls = { ca, cert: readFileSync(out.cert as string), key: readFileSync(out.key as string) };
    const agent = new Agent({ connect: tls, connections: CONNECTIONS });
    const base = `https://localhost:${port}`;
    const tokenReq: Req = {
      path: '/oauth/token',
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials&client_id=bench',
    };
    const tok = await request(`${base}${tokenReq.path}`, {
      method: 'POST',
      headers: tokenReq.headers,
      body: tokenReq.body,
      dispatcher: agent,
    });
    const { access_token } = (await tok.body.json()) as { access_token: string };
    const auth = { authorization: `Bearer ${access_token}` };
    const json = { ...auth, 'content-type': 'application/fhir+json' };

    // 200 patients × 10 Observations, as transactions.
    const patients = Array.from({ length: 200 }, () => randomUUID());
    const obs: string[] = [];
    const observation = (p: string, i: number) => ({
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: i % 2 ? '8867-4' : '29463-7' }] },
      subject: { reference: `Patient/${p}` },
      effectiveDateTime: new Date(Date.UTC(2024, 0, 1) + i * 60_000).toISOString(),
      valueQuantity: { value: 60 + (i % 40), unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    });
    for (const p of patients) {
      const entry: unknown[] = [
        { resource: { resourceType: 'Patient', id: p }, request: { method: 'PUT', url: `Patient/${p}` } },
      ];
      for (let i = 0; i < 10; i++) {
        const id = randomUUID();
        obs.push(id);
        entry.push({ resource: { ...observation(p, i), id }, request: { method: 'PUT', url: `Observation/${id}` } });
      }
      const r = await request(`${base}/fhir/bench`, {
        method: 'POST',
        dispatcher: agent,
        headers: json,
        body: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry }),
      });
      await r.body.arrayBuffer();
      if (r.statusCode !== 200) throw new Error(`seed: ${r.statusCode}`);
    }

    const barePort = await freePort();
    const bare = await bareServer(dataDir, barePort);
    children.push(bare);
    const bareAgent = new Agent({ connect: { ca }, connections: CONNECTIONS });
    const bareBase = `https://localhost:${barePort}`;

    let n = 0;
    const read = (): Req => ({ path: `/fhir/bench/Observation/${obs[n++ % obs.length]}`, headers: auth });
    const createBody = JSON.stringify(observation(patients[0] as string, 1));
    const mixed = (): Req => {
      const x = n++ % 20;
      if (x < 14) return read();
      if (x < 17)
        return {
          path: `/fhir/bench/Observation?code=http://loinc.org|8867-4&subject=Patient/${patients[n % patients.length]}`,
          headers: auth,
        };
      if (x < 19) return { path: '/fhir/bench/Observation', method: 'POST', headers: json, body: createBody };
      return tokenReq;
    };
    // Warm both servers' JIT before measuring.
    await drive(base, agent, pid, 3, mixed);
    await drive(bareBase, bareAgent, bare.pid as number, 2, () => ({ path: '/' }));

    console.log(`${CONNECTIONS} keep-alive HTTPS connections, ${SECONDS} s per phase, ${ROUNDS} rounds (interleaved):`);
    for (let round = 1; round <= ROUNDS; round++) {
      const b = await drive(bareBase, bareAgent, bare.pid as number, SECONDS, () => ({ path: '/' }));
      const r = await drive(base, agent, pid, SECONDS, read);
      const m = await drive(base, agent, pid, SECONDS, mixed);
      console.log(`round ${round}:`);
      console.log(fmt('bare Node HTTPS', b));
      console.log(fmt('carevault read by id', r));
      console.log(fmt('carevault mixed', m));
      console.log(`  reads at ${((100 * r.rate) / b.rate).toFixed(0)} % of the bare server's rate (goal ≥ 50 %)`);
    }

    if (SOAK > 0) {
      const samples: number[] = [rssMiB(pid)];
      const timer = setInterval(() => samples.push(rssMiB(pid)), 10_000);
      const s = await drive(base, agent, pid, SOAK, mixed);
      clearInterval(timer);
      samples.push(rssMiB(pid));
      const firstHalf = samples.slice(1, Math.ceil(samples.length / 2));
      const secondHalf = samples.slice(Math.ceil(samples.length / 2));
      const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
      console.log(`soak, mixed load for ${SOAK} s:`);
      console.log(fmt('carevault mixed', s));
      console.log(
        `  server RSS MiB every 10 s: ${samples.map((x) => x.toFixed(0)).join(' ')} — mean of the first half ${avg(firstHalf).toFixed(0)}, second half ${avg(secondHalf).toFixed(0)}`,
      );
    }
    await agent.close();
    await bareAgent.close();
  } finally {
    for (const c of children.reverse()) await stopServer(c).catch(() => {});
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
