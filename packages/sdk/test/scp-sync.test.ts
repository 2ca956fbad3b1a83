import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  type Bundle,
  type FhirClient,
  type Resource,
  type ScpSyncOptions,
  type ScpSyncResult,
  syncSharedCarePlan,
  TokenManager,
} from '../src/index.ts';
import { tlsFetch } from '../src/node.ts';
import { type Cara, CLIENT_ID, caraVaultClient, DENISHA, EHR_NDJSON, MPI_ID, startCara } from './helpers/cara.ts';
import type { Fault } from './helpers/fault-proxy.ts';

// Seed 000's external system end to end, against a real carevault behind a loopback proxy: the CLI and the
// library, a second run, the organization rules, bad input, and faults (issue 10).
const run = promisify(execFile);
const CLIENT_BIN = fileURLToPath(new URL('../bin/carevault-client.js', import.meta.url));
const GOAL_TYPES = 'https://terminology.cara.ch/CodeSystem/scp-custom-goal-type';

let cara: Cara;
let reader: FhirClient;
let VITALS: string;
const SYNTHEA = join(DENISHA, '..');
const DENISHA_REF = 'Patient/6a93e0ad-9bd0-6d85-34a7-015186f7880a';
let closeFetch: () => Promise<void>;

before(async () => {
  cara = await startCara();
  VITALS = join(cara.dataDir, 'synthea-vitals.ndjson');
  writeFileSync(
    VITALS,
    `${syntheaVitals()
      .map((o) => JSON.stringify(o))
      .join('\n')}\n`,
  );
  const { fetch, client } = caraVaultClient(cara);
  closeFetch = () => fetch.close();
  reader = client;
});
after(async () => {
  await closeFetch();
  await cara.stop();
});

/** `carevault-client scp-sync` as bestclinic-tcu against the platform (`cert` replaces its certificate). */
async function client(...args: string[]) {
  return clientWith(cara.certPath, ...args);
}

async function clientWith(cert: string, ...args: string[]) {
  const base = ['scp-sync', '--issuer', cara.issuer, '--client-id', CLIENT_ID, '--cert', cert, '--key', cara.keyPath];
  try {
    const r = await run(process.execPath, [CLIENT_BIN, ...base, '--ca', cara.caPath, ...args], { timeout: 120_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

type SyncOutput = ScpSyncResult;

/** The library sync of the Synthea vitals as bestclinic-tcu, through the proxy, with test-sized retry waits. */
async function syncVitals(fetch: typeof globalThis.fetch, options: Partial<ScpSyncOptions>) {
  const tokens = new TokenManager({
    issuer: cara.issuer,
    clientId: CLIENT_ID,
    auth: { method: 'tls_client_auth' },
    fetch,
    maxRetries: 6,
  });
  return syncSharedCarePlan({
    issuer: cara.issuer,
    tokens,
    fetch,
    mpiId: MPI_ID,
    organization: { gln: '7601000000001' },
    externalSystem: CLIENT_ID,
    candidates: syntheaVitals(),
    ...options,
  });
}

/** The external observations in the vault (tagged by the external system). */
async function pushedInVault(): Promise<Resource[]> {
  const all: Resource[] = [];
  for await (const r of reader.searchAll('Observation', { _tag: `urn:cara:external_system|${CLIENT_ID}`, _count: 200 }))
    all.push(r);
  return all;
}

/**
 * Real Synthea vitals as the external EHR's history of Denisha: the Observations of every Synthea patient with
 * their subject set to her (one patient's Bundle holds a single set of vitals; ten give the sync real work).
 */
function syntheaVitals(): Resource[] {
  const out: Resource[] = [];
  for (const file of readdirSync(SYNTHEA).filter((f) => f.endsWith('.json'))) {
    const bundle = JSON.parse(readFileSync(join(SYNTHEA, file), 'utf8')) as Bundle;
    for (const e of bundle.entry ?? []) {
      if (e.resource?.resourceType === 'Observation') out.push({ ...e.resource, subject: { reference: DENISHA_REF } });
    }
  }
  return out;
}

/** The vitals the active targets watch: blood-pressure panels (systolic/diastolic) and weights. */
function syntheaExpectations(obs: Resource[] = syntheaVitals()) {
  const code = (r: Resource) => (r.code as { coding: { code: string }[] }).coding[0]?.code;
  const comp = (r: Resource, c: string) =>
    (r.component as { code: { coding: { code: string }[] }; valueQuantity: { value: number } }[]).find(
      (x) => x.code.coding[0]?.code === c,
    )?.valueQuantity.value as number;
  const bp = obs.filter((r) => code(r) === '85354-9');
  const weight = obs.filter((r) => code(r) === '29463-7');
  const highBp = bp.filter((r) => {
    const [s, d] = [comp(r, '8480-6'), comp(r, '8462-4')];
    return s > 125 || s < 90 || d > 80 || d < 60;
  });
  const badWeight = weight.filter((r) => {
    const v = (r.valueQuantity as { value: number }).value;
    return v > 45 || v < 30;
  });
  return { relevant: bp.length + weight.length, attention: highBp.length + badWeight.length, total: obs.length };
}

describe('scp-sync from the command line (contract)', () => {
  test('--dry-run computes everything and writes nothing', async () => {
    const r = await client('--mpi-id', MPI_ID, '--org-gln', '7601000000001', '--observations', DENISHA, '--dry-run');
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as SyncOutput;
    const own = (JSON.parse(readFileSync(DENISHA, 'utf8')) as Bundle).entry?.map((e) => e.resource as Resource) ?? [];
    const expected = syntheaExpectations(own.filter((o) => o.resourceType === 'Observation'));
    assert.equal(expected.relevant, 2, 'her own Bundle holds one blood pressure and one weight');
    assert.equal(out.accountUrn, 'urn:cara:account:alice_1234');
    assert.equal(out.partition, 'alice_1234');
    assert.equal(out.carePlan, 'CarePlan/scp-plan');
    assert.equal(out.organization, 'Organization/scp-org-bestclinic');
    assert.deepEqual(out.pushed, []);
    assert.equal(out.planned?.length, expected.relevant);
    assert.equal(out.attentionPoints.length, expected.attention);
    assert.equal((await pushedInVault()).length, 0, 'nothing was written');
  });

  test('Synthea vitals (NDJSON): exactly the watched ones are pushed, attention points flagged', async () => {
    const r = await client(
      '--mpi-id',
      MPI_ID,
      '--org-gln',
      '7601000000001',
      '--observations',
      VITALS,
      '--batch-size',
      '7',
    );
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as SyncOutput;
    const expected = syntheaExpectations();
    assert.equal(out.pushed.length, expected.relevant);
    assert.equal(out.attentionPoints.length, expected.attention);
    assert.ok(expected.attention > 0, 'the fixture has out-of-range vitals');
    assert.deepEqual(out.failed, []);
    assert.equal(expected.relevant, 18, '9 blood-pressure panels and 9 weights');
    // Heart rate (target on hold), respiratory rate (goal on hold), SpO2 (target on hold), temperature (no
    // target) and the lab panels are not relevant.
    assert.equal(out.skipped, expected.total - expected.relevant);
    assert.deepEqual(Object.keys(out.skippedReasons), ['not-relevant']);

    const stored = await pushedInVault();
    assert.deepEqual(stored.map((o) => o.id).sort(), [...out.pushed].sort());
    for (const o of stored) {
      assert.deepEqual((o.performer as { reference: string }[])[0], { reference: 'Organization/scp-org-bestclinic' });
      const goalType = (o.code as { coding: { system: string; code: string }[] }).coding[0];
      assert.equal(goalType?.system, GOAL_TYPES);
      assert.ok(['cardiovascular', 'dietary'].includes(goalType?.code as string));
      const meta = o.meta as { profile: string[]; tag: { system: string; code: string }[] };
      assert.ok(meta.profile[0]?.endsWith('/ScpObservationExternal'));
      assert.ok(meta.tag.some((t) => t.system.endsWith('fhirvault-namespace') && t.code === 'cara:scp'));
      const ids = o.identifier as { system: string; value: string }[];
      assert.equal(ids.find((i) => i.system === 'urn:cara:account')?.value, 'urn:cara:account:alice_1234');
      assert.match(ids.find((i) => i.system === 'urn:cara:external_id')?.value ?? '', /^Observation\//);
      assert.match(o.effectiveInstant as string, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
      assert.equal(typeof o.valueString, 'string');
      const components = (o.component as { code: { coding: { code: string }[] } }[]).map((c) => c.code.coding[0]?.code);
      if (goalType?.code === 'cardiovascular') assert.deepEqual(components.sort(), ['271649006', '271650006']);
      else assert.deepEqual(components, ['27113001']);
      const aa = ((o.interpretation as { coding: { code: string }[] }[] | undefined) ?? [])[0]?.coding[0]?.code;
      assert.equal(aa === 'AA', out.attentionPoints.includes(o.id as string), `interpretation of ${o.id}`);
    }
  });

  test('a second run changes nothing: same ids, no new resources', async () => {
    const before = await pushedInVault();
    const total = (await reader.search('Observation', { _summary: 'count' })).total;
    const r = await client(
      '--mpi-id',
      MPI_ID,
      '--org-id',
      'urn:cara:org_id:2.16.756.5.30.1.178',
      '--observations',
      VITALS,
    );
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as SyncOutput;
    const after = await pushedInVault();
    assert.deepEqual(after.map((o) => o.id).sort(), before.map((o) => o.id).sort());
    assert.deepEqual([...out.pushed].sort(), before.map((o) => o.id).sort());
    assert.equal((await reader.search('Observation', { _summary: 'count' })).total, total);
    const version = (o: Resource) => Number(o.meta?.versionId);
    const was = new Map(before.map((o) => [o.id, version(o)]));
    for (const o of after)
      assert.ok(version(o) - (was.get(o.id) as number) <= 1, `versions bumped at most once (${o.id})`);
  });

  test('hand-made EHR observations (NDJSON): out of range flagged, no value / pounds / held targets skipped', async () => {
    const r = await client('--mpi-id', MPI_ID, '--org-gln', '7601000000002', '--observations', EHR_NDJSON);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as SyncOutput;
    assert.equal(out.organization, 'Organization/scp-org-spitex', 'GS1 GLN identifies the Spitex organization');
    assert.equal(out.pushed.length, 4, JSON.stringify(out));
    assert.equal(out.attentionPoints.length, 2, 'the 162/95 panel and the 52.4 kg weight');
    assert.deepEqual(out.skippedReasons, { 'incomparable-unit': 1, 'no-value': 1, 'not-relevant': 1 });
    const attention = await Promise.all(out.attentionPoints.map((id) => reader.read('Observation', id)));
    const summaries = attention.map((o) => o.valueString as string).sort();
    assert.match(summaries[0] as string, /Body weight 52\.4 kg \(target 30 kg – 45 kg\)/);
    assert.match(summaries[1] as string, /Systolic blood pressure 162 mm\[Hg\]/);
    for (const o of attention) {
      assert.deepEqual((o.performer as { reference: string }[])[0], { reference: 'Organization/scp-org-spitex' });
    }
  });
});

describe('scp-sync refuses bad input with one line and exit 1, pushing nothing', () => {
  const refused = async (args: string[], pattern: RegExp) => {
    const before = (await pushedInVault()).length;
    const r = await client(...args);
    assert.equal(r.code, 1, `${r.stdout}\n${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0] as string, pattern);
    assert.equal((await pushedInVault()).length, before);
  };

  test('an MPI id AIM does not know', () =>
    refused(
      [
        '--mpi-id',
        'urn:cara:mpi_id:2.16.756.5.30.1.127.3.10.3/00000000-0000-4000-8000-000000000000',
        '--org-gln',
        '7601000000001',
        '--observations',
        EHR_NDJSON,
      ],
      /AIM knows no account/,
    ));

  test('an organization that is not in the care team', () =>
    refused(
      ['--mpi-id', MPI_ID, '--org-gln', '7601000000099', '--observations', EHR_NDJSON],
      /no member Organization.*GLN 7601000000099/,
    ));

  test('a malformed observation file names the line', () => {
    const file = join(cara.dataDir, 'broken.ndjson');
    const lines = readFileSync(EHR_NDJSON, 'utf8').split('\n');
    lines.splice(2, 0, '{"resourceType": "Observation", broken');
    writeFileSync(file, lines.join('\n'));
    return refused(
      ['--mpi-id', MPI_ID, '--org-gln', '7601000000001', '--observations', file],
      /line 3 is not valid JSON/,
    );
  });

  test('an expired client certificate', async () => {
    const { X509Certificate } = await import('node:crypto');
    const expired = join(cara.dataDir, 'expired.pem');
    // A certificate that ran out yesterday: refused before any request, with the date.
    const { createSelfSignedExpired } = await import('./helpers/expired-cert.ts');
    writeFileSync(expired, await createSelfSignedExpired());
    assert.ok(Date.parse(new X509Certificate(readFileSync(expired)).validTo) < Date.now());
    const r = await clientWith(expired, '--mpi-id', MPI_ID, '--org-gln', '7601000000001', '--observations', EHR_NDJSON);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: the client certificate .* expired on /);
  });

  test('no active CarePlan, or several', async () => {
    await cara.admin(
      'account',
      'add',
      '--urn',
      'urn:cara:account:bob_5678',
      '--mpi-id',
      'urn:cara:mpi_id:2.16.756.5.30.1.127.3.10.3/11111111-2222-4333-8444-555555555555',
    );
    await cara.admin('grant', 'add', '--partition', 'bob_5678', '--client', CLIENT_ID, '--scope', 'system/*.cruds');
    const bob = [
      '--mpi-id',
      'urn:cara:mpi_id:2.16.756.5.30.1.127.3.10.3/11111111-2222-4333-8444-555555555555',
      '--org-gln',
      '7601000000001',
      '--observations',
      EHR_NDJSON,
    ];
    await refused(bob, /no active Shared Care Plan/);
    const twoPlans = JSON.parse(
      readFileSync(fileURLToPath(new URL('../../../fixtures/cara-scp/shared-care-plan.json', import.meta.url)), 'utf8'),
    ) as Bundle;
    const second = structuredClone(twoPlans.entry?.find((e) => e.resource?.id === 'scp-plan')) as NonNullable<
      Bundle['entry']
    >[number];
    (second.resource as Resource).id = 'scp-plan-b';
    second.request = { method: 'PUT', url: 'CarePlan/scp-plan-b' };
    twoPlans.entry?.push(second);
    const file = join(cara.dataDir, 'two-plans.json');
    writeFileSync(file, JSON.stringify(twoPlans));
    await cara.admin('import', DENISHA, file, '--partition', 'bob_5678');
    await refused(bob, /2 active Shared Care Plans/);
  });
});

describe('scp-sync through faults (library)', () => {
  test('503s, dropped connections, slow answers and refused batch entries: same final state, no duplicates', async () => {
    const before = await pushedInVault();
    const total = (await reader.search('Observation', { _summary: 'count' })).total;
    const fetch = tlsFetch({ ca: cara.ca, cert: cara.cert, key: cara.key });
    const retries: string[] = [];
    const injected: string[] = [];
    let pushed: string[] = [];
    const start = cara.proxy.seen.length;
    try {
      cara.proxy.fault = (req, seen) => {
        const n = seen - start;
        const batch = req.method === 'POST' && /\/fhir\/alice_1234\/?$/.test(req.url);
        const inject = (kind: string, fault: Fault): Fault => {
          injected.push(kind);
          return fault;
        };
        if (n % 5 === 1) return inject('503', { kind: 'status', status: 503, retryAfter: 0 });
        if (n % 7 === 2) return inject('drop', { kind: 'drop' });
        if (n % 11 === 3) return inject('slow', { kind: 'delay', ms: 300 });
        if (batch && injected.filter((k) => k === 'entry-503').length < 2)
          return inject('entry-503', { kind: 'entry-status', status: 503, every: 3 });
        return { kind: 'pass' };
      };
      const result = await syncVitals(fetch, {
        batchSize: 5,
        retry: { baseDelayMs: 20, maxDelayMs: 200, maxAttempts: 8 },
        onRetry: (i) => retries.push(i.reason),
      });
      assert.deepEqual(result.failed, []);
      assert.equal(result.pushed.length, syntheaExpectations().relevant);
      assert.equal(new Set(result.pushed).size, result.pushed.length);
      pushed = result.pushed;
      for (const kind of ['503', 'drop', 'slow', 'entry-503']) {
        assert.ok(injected.includes(kind), `a ${kind} fault was injected (${injected.join(', ')})`);
      }
      assert.ok(retries.length >= 2, `the FHIR client retried (${retries.join(', ')})`);
    } finally {
      cara.proxy.fault = () => ({ kind: 'pass' });
      await fetch.close();
    }
    const after = (await pushedInVault()).map((o) => o.id as string);
    const expected = new Set([...before.map((o) => o.id as string), ...pushed]);
    assert.deepEqual(after.sort(), [...expected].sort(), 'every pushed observation is there once, nothing else');
    const added = pushed.filter((id) => !before.some((o) => o.id === id)).length;
    assert.equal((await reader.search('Observation', { _summary: 'count' })).total, (total as number) + added);
  });
});

describe('scp-sync with entries the server refuses for good', () => {
  test('a 4xx entry is reported with its diagnostics and not sent again; the sync says it failed', async () => {
    const fetch = tlsFetch({ ca: cara.ca, cert: cara.cert, key: cara.key });
    const start = cara.proxy.seen.length;
    cara.proxy.fault = (req) =>
      req.method === 'POST' && /\/fhir\/alice_1234\/?$/.test(req.url)
        ? { kind: 'entry-status', status: 422, every: 2 }
        : { kind: 'pass' };
    try {
      const result = await syncVitals(fetch, {
        batchSize: 6,
        retry: { baseDelayMs: 10, maxDelayMs: 50 },
      });
      const relevant = syntheaExpectations().relevant;
      const batches = cara.proxy.seen.slice(start).filter((r) => r.method === 'POST' && r.url.startsWith('/fhir/'));
      assert.equal(batches.length, Math.ceil(relevant / 6), 'one round: nothing refused for good is sent again');
      assert.equal(result.failed.length, Math.ceil(relevant / 6) * 3);
      assert.equal(result.pushed.length + result.failed.length, relevant);
      for (const f of result.failed) {
        assert.equal(f.status, 422);
        assert.match(f.diagnostics, /422/);
      }
    } finally {
      cara.proxy.fault = () => ({ kind: 'pass' });
      await fetch.close();
    }
  });
});

describe('scp-sync under a tiny rate limit', () => {
  test('429 + Retry-After from the platform are waited out; the result is complete, with no duplicates', async () => {
    const limited = await startCara({ env: { CAREVAULT_RATE_LIMIT: '1/s' } });
    try {
      writeFileSync(
        join(limited.dataDir, 'vitals.ndjson'),
        syntheaVitals()
          .map((o) => JSON.stringify(o))
          .join('\n'),
      );
      const run1 = await run(
        process.execPath,
        [
          CLIENT_BIN,
          'scp-sync',
          '--issuer',
          limited.issuer,
          '--client-id',
          CLIENT_ID,
          '--cert',
          limited.certPath,
          '--key',
          limited.keyPath,
          '--ca',
          limited.caPath,
          '--mpi-id',
          MPI_ID,
          '--org-gln',
          '7601000000001',
          '--observations',
          join(limited.dataDir, 'vitals.ndjson'),
          '--batch-size',
          '3',
        ],
        { timeout: 120_000 },
      );
      const out = JSON.parse(run1.stdout) as SyncOutput;
      assert.equal(out.pushed.length, syntheaExpectations().relevant);
      assert.deepEqual(out.failed, []);
      assert.match(run1.stderr, /retrying .* \(HTTP 429\)/, `the limit was hit and waited out: ${run1.stderr}`);
      const throttled = limited.proxy.seen.length;
      assert.ok(throttled > out.pushed.length / 3, 'requests went through the proxy');
    } finally {
      await limited.stop();
    }
  });
});
