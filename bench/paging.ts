/**
 * Search in a large vault: what a page costs at the start, deep in a result by `_offset` and by the `next` link
 * (`_cursor`), and for a condition that matches half the vault or a few hundred resources — through a real
 * `carevault serve` over HTTPS. The vault is loaded with `carevault import` (NDJSON), whose rate is printed too.
 * Then the same on PostgreSQL (a schema of its own, dropped afterwards) when BENCH_DATABASE_URL or
 * CAREVAULT_TEST_DATABASE_URL is set.
 *
 *   npm run bench:paging        (about 2 min; BENCH_PAGING_N=100000 Observations by default)
 */
import { randomUUID } from 'node:crypto';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { addClient } from '../packages/server/src/admin/clients.ts';
import { importCommand } from '../packages/server/src/admin/import.ts';
import { loadConfig } from '../packages/server/src/config/index.ts';
import { openStore } from '../packages/server/src/store/index.ts';
import { addGrant } from '../packages/server/src/vault/grants.ts';
import { addPartition } from '../packages/server/src/vault/partitions.ts';
import { freePort } from '../packages/server/test/helpers/platform.ts';
import { secretToken, startServer, stopServer } from './lib.ts';

const N = Number(process.env.BENCH_PAGING_N ?? 100_000);
const DEEP = Math.min(50_000, Math.floor(N / 2));
const ROUNDS = 5;

/** N Observations: every second one of patient `dense`, the others spread over 200 patients. */
async function writeNdjson(file: string): Promise<void> {
  const out = createWriteStream(file);
  for (let i = 0; i < N; i++) {
    const patient = i % 2 === 0 ? 'dense' : `p${i % 400}`;
    const line = JSON.stringify({
      resourceType: 'Observation',
      id: `o${i}`,
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: i % 4 === 0 ? '8867-4' : '8480-6' }] },
      subject: { reference: `Patient/${patient}` },
      effectiveDateTime: new Date(Date.UTC(2020, 0, 1) + i * 60_000).toISOString(),
      valueQuantity: { value: 60 + (i % 80), unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    });
    if (!out.write(`${line}\n`)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
  }
  await new Promise<void>((resolve, reject) => {
    out.once('error', reject);
    out.end(() => resolve());
  });
}

async function measure(ndjson: string, databaseUrl: string | undefined) {
  const dataDir = mkdtempSync(join(tmpdir(), 'carevault-bench-paging-'));
  try {
    const port = await freePort();
    const storeEnv: Record<string, string> = databaseUrl ? { CAREVAULT_DATABASE_URL: databaseUrl } : {};
    const config = loadConfig({ dataDir, port, logLevel: 'silent' }, storeEnv);
    const { client_secret } = await addClient(config, 'bench', { auth: 'client_secret_basic', scope: 'system/*.rs' });
    const store = await openStore({ dataDir, databaseUrl });
    await addPartition(store, 'big');
    await addGrant(store, { partition: 'big', client: 'bench', scope: 'system/*.rs' });
    await store.close();

    const started = performance.now();
    await importCommand(config, [ndjson], 'big');
    const importRate = N / ((performance.now() - started) / 1000);

    const child = await startServer(dataDir, port, storeEnv);
    const base = `https://localhost:${port}`;
    const agent = new Agent({ connect: { ca: readFileSync(join(dataDir, 'pki', 'ca.pem')) }, connections: 1 });
    try {
      const token = await secretToken(base, agent, 'bench', client_secret as string);
      const get = async (path: string) => {
        const res = await request(`${base}/fhir/big/${path}`, {
          dispatcher: agent,
          headers: { authorization: `Bearer ${token}` },
        });
        const body = (await res.body.json()) as { entry?: unknown[]; link: { relation: string; url: string }[] };
        if (res.statusCode !== 200) throw new Error(`${path} → ${res.statusCode} ${JSON.stringify(body)}`);
        return body;
      };
      /** The best of ROUNDS, in ms: the least the machine's noise left of a page. */
      const best = async (path: string) => {
        let ms = Number.POSITIVE_INFINITY;
        for (let i = 0; i < ROUNDS; i++) {
          const t = performance.now();
          const b = await get(path);
          ms = Math.min(ms, performance.now() - t);
          if (!b.entry?.length) throw new Error(`${path}: no matches`);
        }
        return ms;
      };
      // The next link of the page before DEEP names the position DEEP by _cursor.
      const before = await get(`Observation?_count=50&_offset=${DEEP - 50}`);
      const next = before.link.find((l) => l.relation === 'next')?.url as string;
      const cursorPath = next.slice(`${base}/fhir/big/`.length);
      if (!cursorPath.includes('_cursor=')) throw new Error(`not a position: ${next}`);
      const exported = await bulkExport(base, agent, token);
      // The same resources read the way a client without $export would: every page of 1,000 by its next link.
      const t = performance.now();
      let paged = 0;
      for (let page = await get('Observation?_count=1000'); ; ) {
        paged += page.entry?.length ?? 0;
        const link = page.link.find((l) => l.relation === 'next')?.url;
        if (!link) break;
        page = await get(link.slice(`${base}/fhir/big/`.length));
      }
      if (paged !== N) throw new Error(`paged ${paged} of ${N}`);
      const pagedMs = performance.now() - t;
      return {
        importRate,
        exported,
        pagedMs,
        first: await best('Observation?_count=50'),
        byOffset: await best(`Observation?_count=50&_offset=${DEEP}`),
        byCursor: await best(cursorPath),
        newest: await best('Observation?_count=50&_sort=-_lastUpdated'),
        dense: await best('Observation?_count=50&subject=Patient/dense'),
        sparse: await best('Observation?_count=50&subject=Patient/p7'),
      };
    } finally {
      await agent.close();
      await stopServer(child);
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** `$export?_type=Observation`: kick-off to manifest (the job writing its file), then the file's download. */
async function bulkExport(base: string, agent: Agent, token: string) {
  const headers = { authorization: `Bearer ${token}` };
  const started = performance.now();
  const kick = await request(`${base}/fhir/big/$export?_type=Observation`, {
    dispatcher: agent,
    headers: { ...headers, prefer: 'respond-async', accept: 'application/fhir+json' },
  });
  await kick.body.dump();
  const status = kick.headers['content-location'] as string;
  if (kick.statusCode !== 202 || !status) throw new Error(`$export → ${kick.statusCode}`);
  type Manifest = { output: { url: string; count: number }[] };
  let manifest: Manifest | undefined;
  while (!manifest) {
    const res = await request(status, { dispatcher: agent, headers });
    if (res.statusCode === 200) manifest = (await res.body.json()) as Manifest;
    else if (res.statusCode === 202 || res.statusCode === 429) {
      // Polled no sooner than the server allows (E18: half a second after the last answer), so the job's time is
      // known to about that much.
      await res.body.dump();
      const wait = res.statusCode === 429 ? 1000 * Number(res.headers['retry-after'] ?? 1) : 500;
      await new Promise((r) => setTimeout(r, wait));
    } else throw new Error(`${status} → ${res.statusCode} ${await res.body.text()}`);
  }
  const jobMs = performance.now() - started;
  const file = manifest?.output[0];
  if (file?.count !== N) throw new Error(`exported ${file?.count} of ${N}`);
  const t = performance.now();
  const res = await request(file.url, { dispatcher: agent, headers });
  let bytes = 0;
  for await (const chunk of res.body) bytes += (chunk as Buffer).length;
  return { jobMs, downloadMs: performance.now() - t, bytes };
}

function print(name: string, r: Awaited<ReturnType<typeof measure>>) {
  const ms = (v: number) => `${v.toFixed(1)} ms`;
  console.log(`${name}: ${N.toLocaleString('en')} Observations imported at ${r.importRate.toFixed(0)}/s`);
  console.log(
    `  plain search, a page of 50: first ${ms(r.first)}; at ${DEEP.toLocaleString('en')} by _offset ${ms(r.byOffset)}, ` +
      `by the next link (_cursor) ${ms(r.byCursor)} → ${(r.byOffset / r.byCursor).toFixed(1)}× faster; newest first ${ms(r.newest)}`,
  );
  console.log(
    `  subject= a patient with half the vault: ${ms(r.dense)}; with ${Math.round(N / 400)}: ${ms(r.sparse)} ` +
      '(both first pages of 50, oldest first)',
  );
  const { jobMs, downloadMs, bytes } = r.exported;
  const s = (v: number) => `${(v / 1000).toFixed(1)} s`;
  console.log(
    `  $export of the ${N.toLocaleString('en')}: kick-off to manifest ${s(jobMs)} (${(N / (jobMs / 1000)).toFixed(0)}/s), ` +
      `download ${(bytes / 2 ** 20).toFixed(0)} MiB in ${s(downloadMs)}; the same read by search pages of 1,000 ` +
      `${s(r.pagedMs)} → ${(r.pagedMs / (jobMs + downloadMs)).toFixed(1)}× the export's time`,
  );
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'carevault-bench-paging-data-'));
  try {
    const ndjson = join(dir, 'observations.ndjson');
    await writeNdjson(ndjson);
    print('SQLite', await measure(ndjson, undefined));
    const base = process.env.BENCH_DATABASE_URL ?? process.env.CAREVAULT_TEST_DATABASE_URL;
    if (!base) {
      console.log('PostgreSQL: skipped (set BENCH_DATABASE_URL=postgres://… to measure it beside SQLite)');
      return;
    }
    const schema = `bench_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    const url = new URL(base);
    url.searchParams.set('schema', schema);
    try {
      print('PostgreSQL', await measure(ndjson, url.href));
    } finally {
      const { default: pg } = await import('pg');
      const client = new pg.Client({ connectionString: base });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`(best of ${ROUNDS} sequential requests each; server: one process, Node ${process.version})`);
}

await main();
