/**
 * Quality-measure calculation (seed 002): `Measure/$evaluate-measure` population reports over 1,000 patients per
 * measure, synthesized from fqm-execution's test patients with new ids, against a real `carevault serve` child over
 * HTTPS — beside fqm-execution called directly, in this process, on the same 1,000 patient bundles (the engine
 * alone: no store, no HTTP, no audit). Prints patients/s for both and their ratio, measured in one run, and how
 * long reads of one Patient by another client take while the first evaluation runs.
 *   npm run bench:deqm          (about a minute; BENCH_PATIENTS=N sets the patients per measure, BENCH_ROUNDS=N)
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Calculator } from 'fqm-execution';
import { Agent, request } from 'undici';
import { addClient } from '../packages/server/src/admin/clients.ts';
import { importCommand } from '../packages/server/src/admin/import.ts';
import { withStore } from '../packages/server/src/admin/vault.ts';
import { loadConfig } from '../packages/server/src/config/index.ts';
import { addGrant } from '../packages/server/src/vault/grants.ts';
import { addPartition } from '../packages/server/src/vault/partitions.ts';
import { freePort } from '../packages/server/test/helpers/platform.ts';
import { childPids, residentMiB, secretToken, startServer, stopServer, treeCpuSeconds } from './lib.ts';

const PATIENTS = Number(process.env.BENCH_PATIENTS ?? 1000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const DEQM = join(import.meta.dirname, '..', 'fixtures', 'deqm');
const PERIOD = { start: '2022-01-01', end: '2022-12-31' };
const MEASURES = [
  { folder: 'proportion-boolean', id: 'measure-ProportionBooleanTest' },
  { folder: 'ratio-encounter', id: 'measure-RatioEncounterReuseObservation' },
];

type Resource = Record<string, unknown> & { resourceType: string; id: string };

/** `n` patients cloned round-robin from the folder's test patients, every id (and reference to it) renewed. */
function synthesize(folder: string, n: number): Resource[][] {
  const dir = join(DEQM, folder, 'patients');
  const templates = readdirSync(dir).sort();
  const bundles = templates.map((f) =>
    (JSON.parse(readFileSync(join(dir, f), 'utf8')) as { entry: { resource: Resource }[] }).entry
      .map((e) => e.resource)
      .filter((r) => r.resourceType !== 'MeasureReport'),
  );
  return Array.from({ length: n }, (_, i) => {
    let text = JSON.stringify(bundles[i % bundles.length]);
    for (const r of bundles[i % bundles.length] as Resource[]) text = text.replaceAll(r.id, randomUUID());
    return JSON.parse(text) as Resource[];
  });
}

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), 'carevault-bench-deqm-'));
  try {
    const port = await freePort();
    const config = loadConfig({ dataDir, port, logLevel: 'warn' }, {});
    const { client_secret } = await addClient(config, 'bench', { auth: 'client_secret_basic', scope: 'system/*.rs' });
    const cohorts = new Map<string, Resource[][]>();
    for (const m of MEASURES) {
      const patients = synthesize(m.folder, PATIENTS);
      cohorts.set(m.folder, patients);
      await withStore(config, async (s) => {
        await addPartition(s, m.folder);
        await addGrant(s, { partition: m.folder, client: 'bench', scope: 'system/*.rs' });
      });
      const file = join(dataDir, `${m.folder}-patients.json`);
      const entry = patients.flat().map((resource) => ({
        resource,
        request: { method: 'PUT', url: `${resource.resourceType}/${resource.id}` },
      }));
      writeFileSync(file, JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry }));
      await importCommand(config, [join(DEQM, m.folder, 'measure-bundle.json'), file], m.folder);
    }
    const child = await startServer(dataDir, port);
    const pid = child.pid as number;
    const agent = new Agent({ connect: { ca: readFileSync(join(dataDir, 'pki', 'ca.pem')) } });
    const base = `https://localhost:${port}`;
    const access_token = await secretToken(base, agent, 'bench', client_secret as string);
    console.log(`$evaluate-measure (population) over ${PATIENTS} patients per measure, ${ROUNDS} rounds, interleaved:`);
    for (const m of MEASURES) {
      const measureBundle = JSON.parse(readFileSync(join(DEQM, m.folder, 'measure-bundle.json'), 'utf8'));
      const bundles = (cohorts.get(m.folder) ?? []).map((rs) => ({
        resourceType: 'Bundle',
        type: 'collection',
        entry: rs.map((resource) => ({ resource })),
      }));
      const server: number[] = [];
      const serverCpu: number[] = [];
      const engine: number[] = [];
      const readMs: number[] = [];
      const somePatient = (cohorts.get(m.folder)?.[0] ?? []).find((r) => r.resourceType === 'Patient')?.id;
      for (let round = 0; round < ROUNDS; round++) {
        const cpu0 = treeCpuSeconds(pid);
        let t = performance.now();
        const evaluation = request(
          `${base}/fhir/${m.folder}/Measure/${m.id}/$evaluate-measure?periodStart=${PERIOD.start}&periodEnd=${PERIOD.end}`,
          { dispatcher: agent, headers: { authorization: `Bearer ${access_token}`, accept: 'application/fhir+json' } },
        ).then(async (r) => ({
          res: r,
          report: (await r.body.json()) as { group?: { population?: { count?: number }[] }[] },
        }));
        // Meanwhile another client reads one Patient after another: what the evaluation makes it wait.
        let done = false;
        void evaluation.finally(() => {
          done = true;
        });
        await new Promise((r) => setTimeout(r, 200));
        while (round === 0 && !done) {
          const r0 = performance.now();
          const read = await request(`${base}/fhir/${m.folder}/Patient/${somePatient}`, {
            dispatcher: agent,
            headers: { authorization: `Bearer ${access_token}`, accept: 'application/fhir+json' },
          });
          await read.body.dump();
          if (read.statusCode !== 200) throw new Error(`read during the evaluation: ${read.statusCode}`);
          readMs.push(performance.now() - r0);
          await new Promise((r) => setTimeout(r, 20));
        }
        const { res, report } = await evaluation;
        if (res.statusCode !== 200) throw new Error(`evaluate: ${res.statusCode} ${JSON.stringify(report)}`);
        server.push((performance.now() - t) / 1000);
        serverCpu.push(treeCpuSeconds(pid) - cpu0);
        t = performance.now();
        await Calculator.calculate(measureBundle, bundles as never, {
          measurementPeriodStart: PERIOD.start,
          measurementPeriodEnd: PERIOD.end,
          calculateHTML: false,
          verboseCalculationResults: false,
        });
        engine.push((performance.now() - t) / 1000);
        if (round === 0) console.log(`  ${m.folder}: initial population ${report.group?.[0]?.population?.[0]?.count}`);
      }
      const best = (xs: number[]) => Math.min(...xs);
      const perS = PATIENTS / best(server);
      const perCpu = PATIENTS / best(serverCpu);
      const raw = PATIENTS / best(engine);
      console.log(
        `  ${m.folder.padEnd(20)} server ${perS.toFixed(0).padStart(6)} patients/s (${perCpu.toFixed(0)} per CPU-s of the server and its engine) · fqm-execution alone ${raw.toFixed(0).padStart(6)} patients/s · ratio ${(perS / raw).toFixed(2)}`,
      );
      const sorted = [...readMs].sort((a, b) => a - b);
      console.log(
        `  ${''.padEnd(20)} reads of one Patient during the first evaluation: ${sorted.length}, p50 ${(sorted[Math.floor(sorted.length / 2)] ?? 0).toFixed(1)} ms, max ${(sorted.at(-1) ?? 0).toFixed(1)} ms`,
      );
    }
    // The engine process is kept between calculations: what it holds beside the server (its heap limit is
    // CAREVAULT_MEASURE_MEMORY_MB, 1024 by default).
    const engines = childPids(pid);
    const mib = (n: number) => `${n.toFixed(0)} MiB`;
    console.log(
      `  memory: server peak ${mib(residentMiB(pid, 'VmHWM'))}, now ${mib(residentMiB(pid))}; engine process${engines.length === 1 ? '' : 'es'} peak ${engines.map((e) => mib(residentMiB(e, 'VmHWM'))).join(', ') || 'none'}, now ${engines.map((e) => mib(residentMiB(e))).join(', ') || 'none'}`,
    );
    await agent.close();
    await stopServer(child);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
