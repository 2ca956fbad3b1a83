/**
 * Zorgviewer fan-out (seed 001): one patient query through a viewer hub that asks 10 source systems in parallel,
 * against a second hub whose directory holds only the slowest of those sources — both measured in one run,
 * interleaved, one query at a time. Each source sits behind its own loopback proxy adding a fixed delay per
 * request (25 ms … 70 ms), standing in for the network and EHR time of real sources, so the ratio shows what the
 * fan-out itself costs. Goal: p50 and p95 of the 10-source query ≤ 1.2 × those of the slowest single source.
 *   npm run bench:viewer        (about 60 s; BENCH_QUERIES=N sets the rounds, default 40)
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TokenManager, userContextClaims } from '../packages/sdk/src/index.ts';
import { tlsFetch } from '../packages/sdk/src/node.ts';
import { FaultProxy } from '../packages/sdk/test/helpers/fault-proxy.ts';
import { addClient } from '../packages/server/src/admin/clients.ts';
import { importCommand } from '../packages/server/src/admin/import.ts';
import { withStore } from '../packages/server/src/admin/vault.ts';
import { type Config, loadConfig } from '../packages/server/src/config/index.ts';
import { ensureDevPki } from '../packages/server/src/pki/dev-pki.ts';
import { addGrant } from '../packages/server/src/vault/grants.ts';
import { addPartition } from '../packages/server/src/vault/partitions.ts';
import { viewerConsentAdd, viewerInit, viewerSourceAdd } from '../packages/server/src/viewer/admin.ts';
import { freePort } from '../packages/server/test/helpers/platform.ts';
import { cpuSeconds, startServer, stopServer } from './lib.ts';

const SOURCES = 10;
const QUERIES = Number(process.env.BENCH_QUERIES ?? 40);
const BSN = '000004881';
const FIXTURE = join(import.meta.dirname, '..', 'fixtures', 'zorgviewer', 'source-a.json');
const delayOf = (i: number) => 20 + 5 * i;
const oidOf = (i: number) => `2.16.528.1.1007.3.3.${9000 + i}`;
const USER = { id: '177578', role: '62247001', organizationOid: '2.16.528.1.1007.3.3.15123', name: 'L. Arts' };

async function configFor(dir: string): Promise<Config> {
  const port = await freePort();
  return loadConfig({ port, host: '127.0.0.1', dataDir: dir, logLevel: 'warn' }, {});
}

const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number;
};

async function main() {
  const root = mkdtempSync(join(tmpdir(), 'carevault-bench-viewer-'));
  const src = await configFor(join(root, 'src'));
  const hubAll = await configFor(join(root, 'hub-all'));
  const hubOne = await configFor(join(root, 'hub-one'));
  const cleanup: (() => Promise<void>)[] = [];
  try {
    // The source: one platform with a vault per simulated source system, the same patient in each.
    const pki = await ensureDevPki(src.dataDir, ['localhost']);
    const hubs = [
      { config: hubAll, clientId: 'hub-all' },
      { config: hubOne, clientId: 'hub-one' },
    ];
    for (const h of hubs) await viewerInit(h.config, { orgOid: '2.16.840.1.113883.2.4.3.213', consentCheck: true });
    for (const h of hubs) {
      await addClient(src, h.clientId, {
        auth: 'private_key_jwt',
        jwks: join(h.config.dataDir, 'viewer', 'jwks.json'),
        scope: 'system/*.rs',
        assertUserContext: true,
        aggregator: true,
      });
    }
    for (let i = 1; i <= SOURCES; i++) {
      await withStore(src, (s) => addPartition(s, `src-${i}`));
      await importCommand(src, [FIXTURE], `src-${i}`);
      for (const h of hubs) {
        await withStore(src, (s) => addGrant(s, { partition: `src-${i}`, client: h.clientId, scope: 'system/*.rs' }));
      }
    }
    const srcServer = await startServer(src.dataDir, src.port);
    cleanup.push(() => stopServer(srcServer));

    // One delaying proxy per source system, in front of that one platform.
    const proxies: FaultProxy[] = [];
    for (let i = 1; i <= SOURCES; i++) {
      const proxy = new FaultProxy({
        upstream: src.baseUrl,
        cert: pki.server.certPem,
        key: pki.server.keyPem,
        ca: pki.ca.certPem,
        certHeader: 'x-unused-cert',
      });
      proxy.fault = () => ({ kind: 'delay', ms: delayOf(i) });
      await proxy.start();
      proxies.push(proxy);
      cleanup.push(() => proxy.stop());
    }
    const add = async (hub: Config, clientId: string, i: number) => {
      await viewerSourceAdd(hub, {
        name: `Source ${i} (${delayOf(i)} ms)`,
        orgOid: oidOf(i),
        fhirBase: `${(proxies[i - 1] as FaultProxy).origin}/fhir/src-${i}`,
        clientId,
        ca: join(src.dataDir, 'pki', 'ca.pem'),
      });
      await viewerConsentAdd(hub, { bsn: BSN, orgOid: oidOf(i) });
    };
    for (let i = 1; i <= SOURCES; i++) await add(hubAll, 'hub-all', i);
    await add(hubOne, 'hub-one', SOURCES);

    // Each hub serves its aggregator API to a portal client that names the professional in its token.
    const clients: {
      name: string;
      url: string;
      pid: number;
      token: () => Promise<string>;
      fetch: ReturnType<typeof tlsFetch>;
    }[] = [];
    for (const [name, hub] of [
      ['10 sources', hubAll],
      ['slowest source alone', hubOne],
    ] as const) {
      const server = await startServer(hub.dataDir, hub.port, { CAREVAULT_RATE_LIMIT: '100000000/s' });
      cleanup.push(() => stopServer(server));
      const { generateKeyPair, exportJWK } = await import('jose');
      const key = await generateKeyPair('ES256', { extractable: true });
      const jwksFile = join(hub.dataDir, 'portal.json');
      writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(key.publicKey)), kid: 'p' }] }));
      await addClient(hub, 'portal', {
        auth: 'private_key_jwt',
        jwks: jwksFile,
        scope: 'zorgviewer',
        assertUserContext: true,
        aggregator: true,
      });
      const f = tlsFetch({ ca: readFileSync(join(hub.dataDir, 'pki', 'ca.pem'), 'utf8') });
      cleanup.push(() => f.close());
      const tm = new TokenManager({
        issuer: hub.baseUrl,
        clientId: 'portal',
        fetch: f,
        auth: { method: 'private_key_jwt', privateKey: key.privateKey, kid: 'p', claims: userContextClaims(USER) },
      });
      const pid = server.pid as number;
      clients.push({ name, url: `${hub.baseUrl}/viewer/api/query`, pid, token: () => tm.getToken(), fetch: f });
    }

    const once = async (c: (typeof clients)[number]) => {
      const start = performance.now();
      const res = await c.fetch(c.url, {
        method: 'POST',
        headers: { authorization: `Bearer ${await c.token()}`, 'content-type': 'application/json' },
        body: JSON.stringify({ bsn: BSN }),
      });
      const body = (await res.json()) as { sources?: { status: string }[] };
      const ms = performance.now() - start;
      const ok = res.status === 200 && (body.sources ?? []).every((s) => s.status === 'ok');
      if (!ok) throw new Error(`${c.name}: HTTP ${res.status} ${JSON.stringify(body).slice(0, 300)}`);
      return ms;
    };
    for (let i = 0; i < 5; i++) for (const c of clients) await once(c);
    const times = clients.map(() => [] as number[]);
    // CPU seconds spent per query by the hub and by the (shared) source platform.
    const cpu = clients.map(() => ({ hub: 0, source: 0 }));
    for (let i = 0; i < QUERIES; i++) {
      // Interleaved: both see the same machine at the same moments.
      for (const [k, c] of clients.entries()) {
        const [h0, s0] = [cpuSeconds(c.pid), cpuSeconds(srcServer.pid as number)];
        (times[k] as number[]).push(await once(c));
        const used = cpu[k] as { hub: number; source: number };
        used.hub += cpuSeconds(c.pid) - h0;
        used.source += cpuSeconds(srcServer.pid as number) - s0;
      }
    }
    const [all, one] = times as [number[], number[]];
    const row = (name: string, xs: number[], k: number) => {
      const c = cpu[k] as { hub: number; source: number };
      const per = (x: number) => ((x * 1000) / QUERIES).toFixed(0).padStart(4);
      return `${name.padEnd(22)} p50 ${percentile(xs, 50).toFixed(1).padStart(7)} ms   p95 ${percentile(xs, 95).toFixed(1).padStart(7)} ms   CPU per query: hub ${per(c.hub)} ms, sources ${per(c.source)} ms`;
    };
    console.log(
      `Zorgviewer fan-out: one patient query (${QUERIES} rounds, source delays ${delayOf(1)}–${delayOf(SOURCES)} ms per request)`,
    );
    console.log(row('10 sources', all, 0));
    console.log(row('slowest source alone', one, 1));
    const r50 = percentile(all, 50) / percentile(one, 50);
    const r95 = percentile(all, 95) / percentile(one, 95);
    console.log(`ratio                  p50 ${r50.toFixed(2)}×   p95 ${r95.toFixed(2)}×   (goal ≤ 1.20×)`);
    console.log(
      'All 10 simulated sources run in one platform on this machine, so their CPU adds up here where real sources would each use their own.',
    );
  } finally {
    for (const c of cleanup.reverse()) await c().catch(() => {});
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
