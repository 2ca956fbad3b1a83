import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { MedplumClient } from '@medplum/core';
import { importCommand } from '../src/admin/import.ts';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// Bulk Data export (Bulk Data Access IG 2.0, export.html; standards rows E16–E18) on two Synthea patients.
const DATA = fileURLToPath(new URL('../../../fixtures/synthea/', import.meta.url));
const FILES = [
  'Bibi254_Schowalter414_475d72ca-91c7-7211-97e3-f000af33fc04.json',
  'Cris921_Rath779_d4519c92-d241-b2b2-7360-291d60be699e.json',
].map((f) => `${DATA}${f}`);
const OTHER = `${DATA}Denisha680_Keeling57_6a93e0ad-9bd0-6d85-34a7-015186f7880a.json`;

type R = {
  resourceType: string;
  id: string;
  subject?: { reference?: string };
  code?: { coding?: { code?: string }[] };
};
const resourcesOf = (file: string): R[] =>
  (JSON.parse(readFileSync(file, 'utf8')) as { entry: { resource: R }[] }).entry.map((e) => e.resource);
const vault = FILES.flatMap(resourcesOf);
const countByType = (list: R[]) => {
  const out: Record<string, number> = {};
  for (const r of list) out[r.resourceType] = (out[r.resourceType] ?? 0) + 1;
  return out;
};

const KICK_OFF = { prefer: 'respond-async', accept: 'application/fhir+json' };
let p: TestPlatform;
let reader: Caller;
let stranger: Caller;
let patientsOnly: Caller;
let auditor: Caller;

interface Manifest {
  transactionTime: string;
  request: string;
  requiresAccessToken: boolean;
  output: { type: string; url: string; count: number }[];
  error: unknown[];
  deleted?: { type: string; url: string; count: number }[];
}

async function get(caller: Caller | undefined, url: string, method = 'GET') {
  const res = await p.fetch(url, {
    method,
    dispatcher: p.agent(),
    headers: caller ? { authorization: `Bearer ${caller.token}` } : {},
  });
  return {
    status: res.status,
    text: await res.text(),
    type: res.headers.get('content-type') ?? '',
    retryAfter: res.headers.get('retry-after'),
  };
}

/** Kick-off, then the status URL polled until it answers something other than 202. */
async function runExport(
  path: string,
  caller = reader,
  init: { body?: unknown; headers?: Record<string, string> } = {},
) {
  const kick = await fhir(p, caller, init.body ? 'POST' : 'GET', path, init.body, {
    prefer: 'respond-async',
    accept: 'application/fhir+json',
    ...init.headers,
  });
  assert.equal(kick.status, 202, kick.text);
  const status = kick.headers.get('content-location') as string;
  const vault = path.split('/')[1];
  assert.match(status, new RegExp(`^${p.fhirBase}/${vault}/\\$export-status/[0-9a-f-]{36}$`));
  for (let i = 0; i < 400; i++) {
    const r = await get(caller, status);
    // Polled sooner than the server asks (E18): wait as it says.
    if (r.status === 429) await new Promise((resolve) => setTimeout(resolve, 1000 * Number(r.retryAfter)));
    else if (r.status !== 202)
      return { status, answer: r, manifest: r.status === 200 ? (JSON.parse(r.text) as Manifest) : undefined };
    else await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('the export did not finish');
}

/** The manifest's error file, one OperationOutcome per line, as "severity code: diagnostics". */
const errorLines = async (manifest: Manifest, caller = reader) => {
  const file = manifest.error[0] as { type: string; url: string; count: number } | undefined;
  if (!file) return [];
  assert.equal(file.type, 'OperationOutcome');
  const r = await get(caller, file.url);
  assert.equal(r.status, 200, r.text);
  const outcomes = r.text
    .trim()
    .split('\n')
    .map(
      (l) =>
        JSON.parse(l) as { resourceType: string; issue: { severity: string; code: string; diagnostics: string }[] },
    );
  assert.equal(outcomes.length, file.count);
  return outcomes.map((o) => `${o.issue[0]?.severity} ${o.issue[0]?.code}: ${o.issue[0]?.diagnostics}`);
};

async function lines(manifest: Manifest, type: string, caller = reader): Promise<R[]> {
  const file = manifest.output.find((o) => o.type === type);
  if (!file) return [];
  const r = await get(caller, file.url);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.type, 'application/fhir+ndjson');
  return r.text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as R);
}

before(async () => {
  p = await startPlatform();
  await partition(p, 'bulk');
  await partition(p, 'elsewhere');
  reader = await secretClient(p, 'bulk-reader', 'system/*.rs');
  stranger = await secretClient(p, 'bulk-stranger', 'system/*.rs');
  patientsOnly = await secretClient(p, 'bulk-patients', 'system/Patient.rs');
  auditor = await secretClient(p, 'bulk-auditor', 'system/AuditEvent.rs');
  for (const client of ['bulk-reader', 'bulk-stranger'])
    await grant(p, { partition: 'bulk', client, scope: 'system/*.rs' });
  await grant(p, { partition: 'bulk', client: 'bulk-patients', scope: 'system/Patient.rs' });
  await importCommand(p.config, FILES, 'bulk');
  await importCommand(p.config, [OTHER], 'elsewhere');
});
after(() => p.stop());

describe('system-level $export', () => {
  test('every resource of the vault, one NDJSON file per type with its count, and nothing of another vault', async () => {
    const { manifest, answer } = await runExport('/bulk/$export?_outputFormat=application%2Ffhir%2Bndjson');
    assert.ok(manifest, answer.text);
    assert.equal(answer.type.split(';')[0], 'application/json');
    assert.equal(manifest.request, `${p.fhirBase}/bulk/$export?_outputFormat=application%2Ffhir%2Bndjson`);
    assert.equal(manifest.requiresAccessToken, true);
    assert.deepEqual(manifest.error, []);
    assert.ok(Date.parse(manifest.transactionTime) <= Date.now());
    const expected = countByType(vault);
    assert.deepEqual(
      Object.fromEntries(manifest.output.map((o) => [o.type, o.count])),
      expected,
      'one file per type present, with the number of resources of that type',
    );
    const foreign = new Set(resourcesOf(OTHER).map((r) => r.id));
    for (const [type, count] of Object.entries(expected)) {
      const found = await lines(manifest, type);
      assert.equal(found.length, count, type);
      assert.ok(
        found.every((r) => r.resourceType === type),
        type,
      );
      const ids = new Set(vault.filter((r) => r.resourceType === type).map((r) => r.id));
      assert.ok(
        found.every((r) => ids.has(r.id) && !foreign.has(r.id)),
        `${type}: only this vault's resources`,
      );
    }
  });

  test('_type, _since and _typeFilter narrow the export', async () => {
    const obs = vault.find((r) => r.resourceType === 'Observation') as R;
    const since = new Date(Date.now() + 5).toISOString();
    await new Promise((resolve) => setTimeout(resolve, 20));
    const current = (await fhir(p, reader, 'GET', `/bulk/Observation/${obs.id}`)).json;
    const writer = await secretClient(p, 'bulk-writer', 'system/Observation.u');
    await grant(p, { partition: 'bulk', client: 'bulk-writer', scope: 'system/Observation.u' });
    const put = await fhir(p, writer, 'PUT', `/bulk/Observation/${obs.id}`, { ...current, status: 'amended' });
    assert.equal(put.status, 200, put.text);

    const recent = (await runExport(`/bulk/$export?_type=Patient,Observation&_since=${since}`)).manifest as Manifest;
    assert.deepEqual(
      recent.output.map((o) => [o.type, o.count]),
      [['Observation', 1]],
    );
    assert.equal((await lines(recent, 'Observation'))[0]?.id, obs.id);

    const code = '8310-5'; // body temperature, once per patient
    const filtered = (
      await runExport(
        `/bulk/$export?_type=Observation&_typeFilter=${encodeURIComponent(`Observation?code=http://loinc.org|${code}`)}`,
      )
    ).manifest as Manifest;
    const heights = vault.filter(
      (r) => r.resourceType === 'Observation' && r.code?.coding?.some((c) => c.code === code),
    );
    assert.ok(heights.length > 1);
    assert.deepEqual((await lines(filtered, 'Observation')).map((r) => r.id).sort(), heights.map((r) => r.id).sort());
  });

  test('_elements keeps the named elements (and the mandatory ones), tagged SUBSETTED; _type may repeat', async () => {
    const { manifest } = await runExport(
      '/bulk/$export?_type=Patient&_type=Observation&_elements=Patient.gender,subject',
    );
    assert.ok(manifest);
    const patients = await lines(manifest, 'Patient');
    assert.equal(patients.length, 2);
    for (const r of patients) {
      assert.deepEqual(Object.keys(r).sort(), ['gender', 'id', 'meta', 'resourceType']);
      assert.ok(JSON.stringify((r as { meta?: unknown }).meta).includes('SUBSETTED'));
    }
    const observations = await lines(manifest, 'Observation');
    assert.equal(observations.length, countByType(vault).Observation);
    for (const r of observations)
      assert.deepEqual(Object.keys(r).sort(), ['code', 'id', 'meta', 'resourceType', 'status', 'subject']);
  });

  test('a granular scope filters the export as it filters a search', async () => {
    const scope =
      'system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
    const lab = await secretClient(p, 'bulk-lab', scope);
    await grant(p, { partition: 'bulk', client: 'bulk-lab', scope: 'system/*.rs' });
    const { manifest } = await runExport('/bulk/$export', lab);
    assert.ok(manifest);
    const expected = vault.filter(
      (r) =>
        r.resourceType === 'Observation' &&
        (r as { category?: { coding?: { code?: string }[] }[] }).category?.some((c) =>
          c.coding?.some((x) => x.code === 'laboratory'),
        ),
    );
    assert.ok(expected.length > 0 && expected.length < vault.filter((r) => r.resourceType === 'Observation').length);
    assert.deepEqual(
      manifest.output.map((o) => o.type),
      ['Observation'],
    );
    assert.deepEqual(
      (await lines(manifest, 'Observation', lab)).map((r) => r.id).sort(),
      expected.map((r) => r.id).sort(),
    );
  });

  test('a token for some types exports those types only; asking for another is 403', async () => {
    const { manifest } = await runExport('/bulk/$export', patientsOnly);
    assert.deepEqual(
      manifest?.output.map((o) => [o.type, o.count]),
      [['Patient', 2]],
    );
    const r = await fhir(p, patientsOnly, 'GET', '/bulk/$export?_type=Observation', undefined, KICK_OFF);
    assert.equal(r.status, 403, r.text);
    // Nor through a _typeFilter: `_has` would select Patients by Observations this token may not search.
    const has = encodeURIComponent('Patient?_has:Observation:subject:status=final');
    const filtered = await fhir(p, patientsOnly, 'GET', `/bulk/$export?_typeFilter=${has}`, undefined, KICK_OFF);
    assert.equal(filtered.status, 403, filtered.text);
    assert.match(filtered.text, /_has:Observation:subject searches Observation/);
  });
});

describe('patient- and group-level $export', () => {
  const [bibi, cris] = FILES.map((f) => resourcesOf(f).find((r) => r.resourceType === 'Patient') as R);

  test("POST Patient/$export with a patient parameter: that patient's compartment only", async () => {
    const { manifest } = await runExport('/bulk/Patient/$export', reader, {
      body: {
        resourceType: 'Parameters',
        parameter: [
          { name: 'patient', valueReference: { reference: `Patient/${cris?.id}` } },
          { name: '_type', valueString: 'Patient,Observation,Encounter' },
        ],
      },
    });
    assert.ok(manifest);
    assert.deepEqual(
      (await lines(manifest, 'Patient')).map((r) => r.id),
      [cris?.id],
    );
    const crisObs = resourcesOf(FILES[1] as string).filter((r) => r.resourceType === 'Observation');
    const found = await lines(manifest, 'Observation');
    assert.equal(found.length, crisObs.length);
    assert.ok(found.every((r) => r.subject?.reference === `Patient/${cris?.id}`));
  });

  test('Patient/$export without patients: every patient, compartment types only', async () => {
    const { manifest } = await runExport('/bulk/Patient/$export');
    assert.ok(manifest);
    const types = manifest.output.map((o) => o.type);
    assert.ok(types.includes('Observation') && types.includes('Patient'));
    assert.ok(!types.includes('Organization') && !types.includes('Practitioner'), types.join());
    assert.equal((await lines(manifest, 'Patient')).length, 2);
  });

  test("Group/[id]/$export: the compartments of the group's patients", async () => {
    const group = await fhir(p, await groupWriter(), 'POST', '/bulk/Group', {
      resourceType: 'Group',
      type: 'person',
      actual: true,
      member: [{ entity: { reference: `Patient/${bibi?.id}` } }],
    });
    assert.equal(group.status, 201, group.text);
    const { manifest } = await runExport(`/bulk/Group/${group.json.id}/$export?_type=Patient,Condition`);
    assert.ok(manifest);
    assert.deepEqual(
      (await lines(manifest, 'Patient')).map((r) => r.id),
      [bibi?.id],
    );
    const conditions = resourcesOf(FILES[0] as string).filter((r) => r.resourceType === 'Condition');
    assert.equal((await lines(manifest, 'Condition')).length, conditions.length);
    const missing = await fhir(p, reader, 'GET', '/bulk/Group/no-such-group/$export', undefined, KICK_OFF);
    assert.equal(missing.status, 404);
    // A client that may read only device Groups does not learn a person Group's members by exporting it.
    const devices = await secretClient(p, 'bulk-device-groups', 'system/Patient.rs system/Group.rs?type=device');
    await grant(p, { partition: 'bulk', client: 'bulk-device-groups', scope: 'system/*.rs' });
    assert.equal((await fhir(p, devices, 'GET', `/bulk/Group/${group.json.id}`)).status, 403);
    const kick = await fhir(p, devices, 'GET', `/bulk/Group/${group.json.id}/$export`, undefined, KICK_OFF);
    assert.equal(kick.status, 403, kick.text);
  });

  const named = (...ids: (string | undefined)[]) => ({
    resourceType: 'Parameters',
    parameter: [
      ...ids.map((id) => ({ name: 'patient', valueReference: { reference: `Patient/${id}` } })),
      { name: '_type', valueString: 'Patient' },
    ],
  });

  test('the error file: named patients not in the vault, parameters ignored under handling=lenient', async () => {
    const { manifest } = await runExport(
      '/bulk/Patient/$export?includeAssociatedData=LatestProvenanceResources',
      reader,
      {
        body: named(cris?.id, 'nobody'),
        headers: { prefer: 'respond-async, handling=lenient' },
      },
    );
    assert.ok(manifest);
    assert.deepEqual(
      (await lines(manifest, 'Patient')).map((r) => r.id),
      [cris?.id],
    );
    assert.deepEqual(await errorLines(manifest), [
      'warning not-supported: the parameter includeAssociatedData was ignored (Prefer: handling=lenient): this server does not support it',
      'warning not-found: Patient/nobody is not in this vault: nothing of it is exported',
    ]);
    // Only the client that asked may fetch it.
    assert.equal((await get(stranger, (manifest.error[0] as { url: string }).url)).status, 404);
    // A client that may not read Patients learns nothing of which exist.
    const obsOnly = await secretClient(p, 'bulk-observations', 'system/Observation.rs');
    await grant(p, { partition: 'bulk', client: 'bulk-observations', scope: 'system/Observation.rs' });
    const blind = await runExport('/bulk/Patient/$export', obsOnly, {
      body: {
        ...named('nobody'),
        parameter: [named('nobody').parameter[0], { name: '_type', valueString: 'Observation' }],
      },
    });
    assert.deepEqual(blind.manifest?.error, []);
    assert.deepEqual(blind.manifest?.output, []);
  });

  test("the error file: a group's inactive members and non-patients are left out, named non-members too", async () => {
    const group = await fhir(p, await groupWriter(), 'POST', '/bulk/Group', {
      resourceType: 'Group',
      type: 'person',
      actual: true,
      member: [
        { entity: { reference: `Patient/${bibi?.id}` } },
        { entity: { reference: `Patient/${cris?.id}` }, inactive: true },
        { entity: { reference: 'Device/pump-1' } },
      ],
    });
    assert.equal(group.status, 201, group.text);
    const all = await runExport(`/bulk/Group/${group.json.id}/$export?_type=Patient`);
    assert.ok(all.manifest);
    assert.deepEqual(
      (await lines(all.manifest, 'Patient')).map((r) => r.id),
      [bibi?.id],
    );
    assert.deepEqual(await errorLines(all.manifest), [
      `information informational: 1 member(s) of Group/${group.json.id} are inactive or outside their membership period: not exported (Group.member.inactive, Group.member.period)`,
      `information informational: 1 member(s) of Group/${group.json.id} are not Patient references: not exported`,
    ]);
    const some = await runExport(`/bulk/Group/${group.json.id}/$export`, reader, { body: named(bibi?.id, cris?.id) });
    assert.ok(some.manifest);
    assert.deepEqual(
      (await lines(some.manifest, 'Patient')).map((r) => r.id),
      [bibi?.id],
    );
    assert.ok(
      (await errorLines(some.manifest)).includes(
        `warning not-found: Patient/${cris?.id} is not an active member of Group/${group.json.id}: nothing of it is exported`,
      ),
    );
  });

  test("a group's members whose membership period has ended or not yet begun are left out", async () => {
    const writer = await groupWriter();
    const year = new Date().getUTCFullYear();
    const exported = async (member: unknown[]) => {
      const group = await fhir(p, writer, 'POST', '/bulk/Group', {
        resourceType: 'Group',
        type: 'person',
        actual: true,
        member,
      });
      assert.equal(group.status, 201, group.text);
      const { manifest } = await runExport(`/bulk/Group/${group.json.id}/$export?_type=Patient`);
      assert.ok(manifest);
      const notes = await errorLines(manifest);
      return { ids: (await lines(manifest, 'Patient')).map((r) => r.id), notes };
    };
    // Periods of every precision: a year, a month, a day, an instant.
    const ended = await exported([
      { entity: { reference: `Patient/${bibi?.id}` }, period: { start: '2019', end: `${year + 1}-01` } },
      { entity: { reference: `Patient/${cris?.id}` }, period: { start: '2019-03-04', end: '2021-06' } },
    ]);
    assert.deepEqual(ended.ids, [bibi?.id]);
    assert.equal(ended.notes.length, 1);
    assert.match(ended.notes[0] as string, /1 member\(s\) .* outside their membership period/);
    const future = await exported([
      { entity: { reference: `Patient/${bibi?.id}` }, period: { start: `${year + 1}-02-03T04:05:06Z` } },
      {
        entity: { reference: `Patient/${cris?.id}` },
        period: { start: '2019-03-04T10:00:00+01:00', end: `${year + 2}` },
      },
    ]);
    assert.deepEqual(future.ids, [cris?.id]);
    assert.equal(future.notes.length, 1);
  });
});

async function groupWriter(): Promise<Caller> {
  const client = `bulk-group-${Date.now()}`;
  const c = await secretClient(p, client, 'system/Group.c');
  await grant(p, { partition: 'bulk', client, scope: 'system/Group.c' });
  return c;
}

describe('status, files and cancellation', () => {
  test('only the client that asked sees the job and its files; DELETE removes both', async () => {
    const { status, manifest } = await runExport('/bulk/$export?_type=Patient');
    const file = manifest?.output[0]?.url as string;
    assert.equal((await get(stranger, status)).status, 404, 'another client of the same vault');
    assert.equal((await get(stranger, file)).status, 404);
    assert.equal((await get(undefined, status)).status, 401);
    assert.equal((await get(undefined, file)).status, 401);
    assert.equal((await get(reader, status.replace('/bulk/', '/elsewhere/'))).status, 404, 'another vault');
    assert.equal((await get(reader, file.replace(/Patient\.ndjson$/, 'Observation.ndjson'))).status, 404);
    assert.equal((await get(reader, file.replace(/Patient\.ndjson$/, '..%2F..%2Fsecret.ndjson'))).status, 404);
    assert.equal((await get(reader, status, 'DELETE')).status, 202);
    assert.equal((await get(reader, status)).status, 404);
    assert.equal((await get(reader, file)).status, 404);
  });

  test('a download needs the access the export was made with: a narrowed grant is 403', async () => {
    const narrowed = await secretClient(p, 'bulk-narrowed', 'system/*.rs');
    await grant(p, { partition: 'bulk', client: 'bulk-narrowed', scope: 'system/*.rs' });
    const { manifest } = await runExport('/bulk/$export?_type=Patient,Observation', narrowed);
    assert.equal((await lines(manifest as Manifest, 'Patient', narrowed)).length, 2);
    await grant(p, { partition: 'bulk', client: 'bulk-narrowed', scope: 'system/Patient.rs' });
    const file = manifest?.output.find((o) => o.type === 'Observation')?.url as string;
    const r = await get(narrowed, file);
    assert.equal(r.status, 403, r.text);
    assert.equal((await lines(manifest as Manifest, 'Patient', narrowed)).length, 2, 'what is still allowed');
  });

  test('a status polled sooner than half its Retry-After after the last poll is 429 (E18), on any node', async () => {
    // An export another node is working on: its job file, and that node's lock (a live process on this host).
    const { status } = await runExport('/bulk/$export?_type=Patient');
    const dir = join(p.dataDir, 'jobs', 'exports');
    const done = JSON.parse(readFileSync(join(dir, `${status.split('/').pop()}.job.json`), 'utf8'));
    const id = randomUUID();
    const lock = join(dir, `${id}.lock`);
    writeFileSync(lock, `${hostname()} ${process.pid} another-node`);
    writeFileSync(
      join(dir, `${id}.job.json`),
      JSON.stringify({ ...done, id, state: 'in-progress', result: undefined }),
    );
    const running = status.replace(/[0-9a-f-]{36}$/, id);

    const first = await get(reader, running);
    assert.equal(first.status, 202);
    assert.equal(first.retryAfter, '1');
    const again = await get(reader, running);
    assert.equal(again.status, 429, again.text);
    assert.equal(again.retryAfter, '1');
    assert.equal(JSON.parse(again.text).issue[0].code, 'throttled');
    assert.equal((await get(stranger, running)).status, 404, 'another client still learns nothing of the job');
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.equal((await get(reader, running)).status, 202, 'polled as asked');
    assert.equal((await get(reader, running)).status, 429);
    assert.equal((await get(reader, running, 'DELETE')).status, 202);
    rmSync(lock);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.startsWith(id)),
      [],
      'the job and its poll time are removed',
    );
    // A finished export's manifest may be fetched again at once.
    const { status: finished } = await runExport('/bulk/$export?_type=Patient');
    assert.equal((await get(reader, finished)).status, 200);
    assert.equal((await get(reader, finished)).status, 200);
  });

  test('a client keeps at most 24 exports in a vault: the 25th kick-off is 429 until one is deleted', async () => {
    const many = await secretClient(p, 'bulk-many', 'system/*.rs');
    await grant(p, { partition: 'bulk', client: 'bulk-many', scope: 'system/*.rs' });
    const statuses: string[] = [];
    for (let i = 0; i < 24; i++) {
      const r = await fhir(p, many, 'GET', '/bulk/$export?_type=Patient', undefined, KICK_OFF);
      assert.equal(r.status, 202, r.text);
      statuses.push(r.headers.get('content-location') as string);
    }
    const refused = await fhir(p, many, 'GET', '/bulk/$export?_type=Patient', undefined, KICK_OFF);
    assert.equal(refused.status, 429, refused.text);
    assert.equal((refused.json as { issue: { code: string }[] }).issue[0]?.code, 'throttled');
    assert.match(refused.text, /keeps 24 exports in this vault/);
    const wait = Number(refused.headers.get('retry-after'));
    assert.ok(wait > 23 * 3600 && wait <= 24 * 3600, `Retry-After ${wait}: until the oldest expires`);
    assert.equal(
      (await fhir(p, reader, 'GET', '/bulk/$export?_type=Patient', undefined, KICK_OFF)).status,
      202,
      'other clients are not held back',
    );
    assert.equal((await get(many, statuses[0] as string, 'DELETE')).status, 202);
    assert.equal((await fhir(p, many, 'GET', '/bulk/$export?_type=Patient', undefined, KICK_OFF)).status, 202);
  });

  test('every download is audited as an $export of that type', async () => {
    const { manifest } = await runExport('/bulk/$export?_type=Patient');
    await lines(manifest as Manifest, 'Patient');
    const events = await get(auditor, `${p.base}/audit/AuditEvent?subtype=operation&_count=1000`);
    const texts =
      (JSON.parse(events.text) as { entry?: { resource: { entity?: { description?: string }[] } }[] }).entry ?? [];
    const descriptions = texts.flatMap((e) => (e.resource.entity ?? []).map((x) => x.description));
    assert.ok(descriptions.includes('$export Patient'), JSON.stringify(descriptions));
    assert.ok(descriptions.includes('$export'), 'the kick-off too');
  });
});

describe('a third-party client', () => {
  test("MedplumClient.bulkExport (@medplum/core): its POST kick-off, its polls and the files' contents", async () => {
    const medplum = new MedplumClient({
      baseUrl: `${new URL(p.fhirBase).origin}/`,
      fhirUrlPath: new URL(p.fhirBase).pathname.slice(1),
      fetch: (url: string, init: RequestInit) => p.fetch(url, { ...(init as object), dispatcher: p.agent() }) as never,
    });
    const client = await secretClient(p, 'bulk-medplum', 'system/*.rs');
    await grant(p, { partition: 'bulk', client: 'bulk-medplum', scope: 'system/*.rs' });
    medplum.setAccessToken(client.token);
    const manifest = (await medplum.bulkExport('bulk', 'Patient,Observation', undefined, {
      pollStatusOnAccepted: true,
    })) as Manifest;
    const expected = countByType(vault);
    assert.deepEqual(Object.fromEntries(manifest.output.map((o) => [o.type, o.count])), {
      Patient: expected.Patient,
      Observation: expected.Observation,
    });
    for (const file of manifest.output) {
      const text = await medplum.download(file.url).then((blob) => blob.text());
      const ids = text
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as R).id);
      assert.deepEqual(
        ids.sort(),
        vault
          .filter((r) => r.resourceType === file.type)
          .map((r) => r.id)
          .sort(),
      );
    }
  });
});

describe('kick-off errors', () => {
  test('the CapabilityStatement states the export at the vault, Patient and Group', async () => {
    const cs = (await fhir(p, undefined, 'GET', '/bulk/metadata')).json as {
      instantiates: string[];
      rest: { operation: { name: string }[]; resource: { type: string; operation?: { name: string }[] }[] }[];
    };
    assert.ok(cs.instantiates.includes('http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data'));
    assert.deepEqual(
      cs.rest[0]?.operation.map((o) => o.name),
      ['export', 'validate', 'meta', 'meta-add', 'meta-delete'],
    );
    const ops = (t: string) => cs.rest[0]?.resource.find((r) => r.type === t)?.operation?.map((o) => o.name);
    assert.deepEqual(ops('Patient'), ['export', 'everything']);
    assert.deepEqual(ops('Group'), ['export']);
  });

  test('bad requests are 400 OperationOutcomes before any job exists (E16: no token is 401)', async () => {
    const none = await fhir(p, undefined, 'GET', '/bulk/$export', undefined, KICK_OFF);
    assert.equal(none.status, 401);
    const cases: [string, Record<string, string>, RegExp][] = [
      ['/bulk/$export', { accept: 'application/fhir+json' }, /respond-async/],
      // fetch sends Accept: */* unless told otherwise; an empty one is as good as none.
      ['/bulk/$export', { prefer: 'respond-async', accept: '' }, /Accept: application\/fhir\+json/],
      [`/bulk/$export?_since=${new Date(Date.now() + 3_600_000).toISOString()}`, KICK_OFF, /in the future/],
      ['/bulk/$export?_since=0000-60-01T30:70:80%2B05:00', KICK_OFF, /_since/],
      ['/bulk/$export?_elements=Nope.id', KICK_OFF, /_elements/],
      ['/bulk/$export?_elements=Patient.name.given', KICK_OFF, /_elements/],
      ['/bulk/$export?_outputFormat=text/csv', KICK_OFF, /_outputFormat/],
      ['/bulk/$export?_type=Nope', KICK_OFF, /Nope/],
      ['/bulk/$export?_since=yesterday', KICK_OFF, /_since/],
      ['/bulk/$export?includeAssociatedData=LatestProvenanceResources', KICK_OFF, /handling=lenient/],
      ['/bulk/$export?_typeFilter=Observation%3F_sort%3Ddate', KICK_OFF, /_sort/],
      ['/bulk/$export?_typeFilter=Observation%3Fnosuch%3D1', KICK_OFF, /nosuch/],
      ['/bulk/$export?_typeFilter=status%3Dfinal', KICK_OFF, /_typeFilter/],
      ['/bulk/Patient/$export?_type=Organization', KICK_OFF, /compartment/],
      ['/bulk/$export?patient=Patient/1', KICK_OFF, /patient/],
    ];
    for (const [path, headers, message] of cases) {
      const r = await fhir(p, reader, 'GET', path, undefined, headers);
      assert.equal(r.status, 400, `${path} → ${r.text}`);
      assert.match(String((r.json as { issue?: { diagnostics?: string }[] }).issue?.[0]?.diagnostics), message, path);
    }
    const lenient = await fhir(
      p,
      reader,
      'GET',
      '/bulk/$export?_type=Patient&includeAssociatedData=LatestProvenanceResources',
      undefined,
      { ...KICK_OFF, prefer: 'respond-async, handling=lenient' },
    );
    assert.equal(lenient.status, 202, lenient.text);
  });
});

/** The deletions a manifest lists, as "Type/id", after checking each line is the IG's transaction Bundle. */
async function deletedIn(manifest: Manifest, caller = reader): Promise<string[]> {
  const out: string[] = [];
  for (const file of manifest.deleted ?? []) {
    assert.equal(file.type, 'Bundle');
    const r = await get(caller, file.url);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.type, 'application/fhir+ndjson');
    const bundles = r.text
      .trim()
      .split('\n')
      .map(
        (l) =>
          JSON.parse(l) as {
            resourceType: string;
            type: string;
            entry: { request: { method: string; url: string } }[];
          },
      );
    assert.equal(bundles.length, file.count);
    for (const b of bundles) {
      assert.equal(b.resourceType, 'Bundle');
      assert.equal(b.type, 'transaction');
      for (const e of b.entry) {
        assert.equal(e.request.method, 'DELETE');
        out.push(e.request.url);
      }
    }
  }
  return out.sort();
}

describe('_since exports list what was deleted since (manifest `deleted`)', () => {
  const [bibi, cris] = FILES.map((f) => resourcesOf(f));
  const patientOf = (rs: R[] | undefined) => (rs ?? []).find((r) => r.resourceType === 'Patient')?.id;
  const observationsOf = (rs: R[] | undefined) => (rs ?? []).filter((r) => r.resourceType === 'Observation');

  test('deleted after _since and still deleted, within the export: as DELETE entries; the rest not', async () => {
    const writer = await secretClient(p, 'bulk-deleter', 'system/Observation.cruds');
    await grant(p, { partition: 'bulk', client: 'bulk-deleter', scope: 'system/Observation.cruds' });
    const [b1, b2, b3] = observationsOf(bibi);
    const [c1, c2] = observationsOf(cris);
    assert.ok(b1 && b2 && b3 && c1 && c2);
    const del = async (o: R) =>
      assert.equal((await fhir(p, writer, 'DELETE', `/bulk/Observation/${o.id}`)).status, 204);
    await del(b1); // deleted before _since: the previous export already said so
    await new Promise((resolve) => setTimeout(resolve, 10));
    const since = new Date().toISOString();
    await new Promise((resolve) => setTimeout(resolve, 10));
    await del(b2);
    await del(c1);
    // Deleted, then written again: it exists, and is in the output.
    await del(c2);
    const again = await fhir(p, writer, 'PUT', `/bulk/Observation/${c2.id}`, { ...c2, status: 'amended' });
    assert.equal(again.status, 201, again.text);
    // Created and deleted since: listed (a DELETE of what the client never had is harmless to it).
    const brief = await fhir(p, writer, 'POST', '/bulk/Observation', { ...b3, id: undefined });
    assert.equal(brief.status, 201, brief.text);
    await del(brief.json as unknown as R);

    const system = (await runExport(`/bulk/$export?_type=Observation,Patient&_since=${since}`)).manifest as Manifest;
    assert.deepEqual(
      await deletedIn(system),
      [`Observation/${b2.id}`, `Observation/${c1.id}`, `Observation/${brief.json.id}`].sort(),
    );
    assert.deepEqual(
      system.deleted?.map((f) => f.url.split('/').pop()),
      ['deleted-Observation.ndjson'],
    );
    assert.deepEqual(
      (await lines(system, 'Observation')).map((r) => r.id),
      [c2.id],
    );

    // Patient level, one patient: only what was in her compartment before it was deleted.
    const one = await runExport('/bulk/Patient/$export', reader, {
      body: {
        resourceType: 'Parameters',
        parameter: [
          { name: 'patient', valueReference: { reference: `Patient/${patientOf(cris)}` } },
          { name: '_since', valueInstant: since },
          { name: '_type', valueString: 'Observation' },
        ],
      },
    });
    assert.deepEqual(await deletedIn(one.manifest as Manifest), [`Observation/${c1.id}`]);

    // Nobody else downloads the file.
    const url = system.deleted?.[0]?.url as string;
    assert.equal((await get(stranger, url)).status, 404);

    // A _typeFilter narrows the export by a query a deleted resource cannot be checked against: not listed, said.
    const filtered = (
      await runExport(
        `/bulk/$export?_type=Observation&_since=${since}&_typeFilter=${encodeURIComponent('Observation?status=final')}`,
      )
    ).manifest as Manifest;
    assert.deepEqual(filtered.deleted, []);
    assert.deepEqual(await errorLines(filtered), [
      "information informational: Observation is exported as it was when read, not as of the transactionTime: its export is narrowed by a query (_typeFilter, or the token's scope) that an older version cannot be checked against",
      `warning not-supported: deletions of Observation since ${since} are not listed: the export of Observation is narrowed by a query (_typeFilter, or the token's scope) that a deleted resource can no longer be checked against`,
    ]);

    // Without _since there is nothing to list.
    const full = (await runExport('/bulk/$export?_type=Patient')).manifest as Manifest;
    assert.equal(full.deleted, undefined);
  });
});

describe('an export is as of its transactionTime (export.html: SHOULD NOT include later changes, SHALL those before)', () => {
  test('what changed after it, while the job waited or ran, is exported as it was then, or not at all', async () => {
    await partition(p, 'asof');
    const writer = await secretClient(p, 'asof-writer', 'system/*.cruds');
    await grant(p, { partition: 'asof', client: 'asof-writer', scope: 'system/*.cruds' });
    await grant(p, { partition: 'asof', client: 'bulk-reader', scope: 'system/*.rs' });
    const put = async (type: string, id: string, body: Record<string, unknown>) => {
      const r = await fhir(p, writer, 'PUT', `/asof/${type}/${id}`, { resourceType: type, id, ...body });
      assert.ok(r.status === 200 || r.status === 201, r.text);
    };
    const del = async (type: string, id: string) =>
      assert.equal((await fhir(p, writer, 'DELETE', `/asof/${type}/${id}`)).status, 204);
    const obs = (patient: string, status = 'final') => ({
      status,
      code: { text: 'pulse' },
      subject: { reference: `Patient/${patient}` },
    });
    await put('Patient', 'pa', {});
    await put('Patient', 'pb', {});
    await put('Observation', 'o1', obs('pa'));
    await put('Observation', 'o2', obs('pb'));
    await new Promise((resolve) => setTimeout(resolve, 5));
    const since = new Date().toISOString();
    await new Promise((resolve) => setTimeout(resolve, 5));
    await put('Patient', 'pc', {});
    await put('Observation', 'o3', obs('pa'));
    await put('Observation', 'o4', obs('pa'));
    await put('Observation', 'o5', obs('pb'));
    // The store's committed-through instant is a millisecond before its clock, so that a write still to come in
    // the same millisecond is after it: asked in o5's own millisecond, it would rightly leave o5 out.
    await new Promise((resolve) => setTimeout(resolve, 5));
    const asOf = await p.store.resources.committedThrough();
    // After the transactionTime: as if written while the job waited in the queue or ran.
    await put('Observation', 'o1', obs('pa', 'amended'));
    await del('Observation', 'o3');
    await put('Observation', 'o4', obs('pb'));
    await put('Observation', 'o5', obs('pa'));
    await put('Observation', 'o6', obs('pa'));
    await put('Patient', 'pa', { gender: 'female' });
    await del('Patient', 'pc');

    const real = p.store.resources.committedThrough;
    p.store.resources.committedThrough = async () => asOf;
    try {
      type O = R & { status?: string; meta?: { versionId?: string } };
      const state = async (m: Manifest, type: string) =>
        ((await lines(m, type)) as O[])
          .map((r) => `${r.id} v${r.meta?.versionId}${r.subject ? ` ${r.subject.reference} ${r.status}` : ''}`)
          .sort();

      const all = (await runExport('/asof/$export?_type=Patient,Observation')).manifest as Manifest;
      assert.equal(all.transactionTime, new Date(asOf).toISOString());
      assert.deepEqual(await state(all, 'Patient'), ['pa v1', 'pb v1', 'pc v1']);
      assert.deepEqual(await state(all, 'Observation'), [
        'o1 v1 Patient/pa final',
        'o2 v1 Patient/pb final',
        'o3 v1 Patient/pa final',
        'o4 v1 Patient/pa final',
        'o5 v1 Patient/pb final',
      ]);
      assert.deepEqual(
        all.output.map((f) => `${f.type} ${f.count}`),
        ['Patient 3', 'Observation 5'],
      );
      assert.deepEqual(await errorLines(all), []);

      // A patient's compartment as it was: o4 was hers then, o5 was not, o6 did not exist.
      const hers = await runExport('/asof/Patient/$export', reader, {
        body: {
          resourceType: 'Parameters',
          parameter: [
            { name: 'patient', valueReference: { reference: 'Patient/pa' } },
            { name: '_type', valueString: 'Observation' },
          ],
        },
      });
      assert.deepEqual(await state(hers.manifest as Manifest, 'Observation'), [
        'o1 v1 Patient/pa final',
        'o3 v1 Patient/pa final',
        'o4 v1 Patient/pa final',
      ]);
      // Every patient: one deleted since was a patient then.
      const everyone = (await runExport('/asof/Patient/$export?_type=Patient')).manifest as Manifest;
      assert.deepEqual(await state(everyone, 'Patient'), ['pa v1', 'pb v1', 'pc v1']);

      // _since: what changed between it and the transactionTime; o3's deletion came later, so it is not listed.
      const changed = (await runExport(`/asof/$export?_type=Observation,Patient&_since=${since}`)).manifest as Manifest;
      assert.deepEqual(await state(changed, 'Observation'), [
        'o3 v1 Patient/pa final',
        'o4 v1 Patient/pa final',
        'o5 v1 Patient/pb final',
      ]);
      assert.deepEqual(await state(changed, 'Patient'), ['pc v1']);
      assert.deepEqual(changed.deleted, []);

      // Narrowed by a query, a type is read as it is now (an older version cannot be checked against the
      // query), and the error file says so.
      const filtered = (
        await runExport(`/asof/$export?_type=Observation&_typeFilter=${encodeURIComponent('Observation?status=final')}`)
      ).manifest as Manifest;
      assert.deepEqual(await state(filtered, 'Observation'), [
        'o2 v1 Patient/pb final',
        'o4 v2 Patient/pb final',
        'o5 v2 Patient/pa final',
        'o6 v1 Patient/pa final',
      ]);
      assert.deepEqual(await errorLines(filtered), [
        "information informational: Observation is exported as it was when read, not as of the transactionTime: its export is narrowed by a query (_typeFilter, or the token's scope) that an older version cannot be checked against",
      ]);
    } finally {
      p.store.resources.committedThrough = real;
    }
  });
  test('a Binary is exported with the patient of the resource its securityContext names, as it was then', async () => {
    await partition(p, 'proxy');
    const writer = await secretClient(p, 'proxy-writer', 'system/*.cruds');
    await grant(p, { partition: 'proxy', client: 'proxy-writer', scope: 'system/*.cruds' });
    await grant(p, { partition: 'proxy', client: 'bulk-reader', scope: 'system/*.rs' });
    const put = async (type: string, id: string, body: Record<string, unknown>) => {
      const r = await fhir(p, writer, 'PUT', `/proxy/${type}/${id}`, { resourceType: type, id, ...body });
      assert.ok(r.status === 200 || r.status === 201, r.text);
    };
    const doc = (patient: string) => ({
      status: 'current',
      subject: { reference: `Patient/${patient}` },
      content: [{ attachment: { contentType: 'application/pdf' } }],
    });
    const bin = (context: string | undefined, text = 'a letter') => ({
      contentType: 'application/pdf',
      data: Buffer.from(text).toString('base64'),
      ...(context ? { securityContext: { reference: context } } : {}),
    });
    await put('Patient', 'pa', {});
    await put('Patient', 'pb', {});
    await put('DocumentReference', 'da', doc('pa'));
    await put('DocumentReference', 'db', doc('pb'));
    await put('Binary', 'ba', bin('DocumentReference/da'));
    await put('Binary', 'bc', bin('DocumentReference/da', 'a consult'));
    await put('Binary', 'bb', bin('DocumentReference/db'));
    await put('Binary', 'bp', bin('Patient/pa'));
    await put('Binary', 'bn', bin(undefined));
    await new Promise((resolve) => setTimeout(resolve, 5));
    const since = new Date().toISOString();
    await new Promise((resolve) => setTimeout(resolve, 5));
    // Written and deleted since: hers by its document, so listed in her deletions.
    await put('Binary', 'bx', bin('DocumentReference/da'));
    assert.equal((await fhir(p, writer, 'DELETE', '/proxy/Binary/bx')).status, 204);
    await new Promise((resolve) => setTimeout(resolve, 5));
    const asOf = await p.store.resources.committedThrough();
    // Changed after the transactionTime: exported as it was, judged by its document as that was.
    await put('Binary', 'ba', bin('DocumentReference/da', 'amended'));

    const real = p.store.resources.committedThrough;
    p.store.resources.committedThrough = async () => asOf;
    try {
      const hers = async (extra: { name: string; valueInstant: string }[] = []) =>
        (
          await runExport('/proxy/Patient/$export', reader, {
            body: {
              resourceType: 'Parameters',
              parameter: [
                { name: 'patient', valueReference: { reference: 'Patient/pa' } },
                { name: '_type', valueString: 'Binary' },
                ...extra,
              ],
            },
          })
        ).manifest as Manifest;
      const all = await hers();
      const found = (await lines(all, 'Binary')) as (R & { data?: string; meta?: { versionId?: string } })[];
      assert.deepEqual(found.map((r) => `${r.id} v${r.meta?.versionId}`).sort(), ['ba v1', 'bc v1', 'bp v1']);
      assert.equal(Buffer.from(found.find((r) => r.id === 'ba')?.data ?? '', 'base64').toString(), 'a letter');
      const changed = await hers([{ name: '_since', valueInstant: since }]);
      assert.deepEqual(await deletedIn(changed), ['Binary/bx']);
    } finally {
      p.store.resources.committedThrough = real;
    }
    // A client that may read Binaries and Patients but no DocumentReference exports no document's bytes, and
    // lists no deleted one (its deletions cannot be judged by a document as it was).
    const bytes = await secretClient(p, 'proxy-bytes', 'system/Binary.rs system/Patient.rs');
    await grant(p, { partition: 'proxy', client: 'proxy-bytes', scope: 'system/*.rs' });
    const typeBinary = { resourceType: 'Parameters', parameter: [{ name: '_type', valueString: 'Binary' }] };
    const theirs = (await runExport('/proxy/$export', bytes, { body: typeBinary })).manifest as Manifest;
    assert.deepEqual((await lines(theirs, 'Binary', bytes)).map((r) => r.id).sort(), ['bn', 'bp']);
    const since2 = {
      ...typeBinary,
      parameter: [...typeBinary.parameter, { name: '_since', valueInstant: since }],
    };
    const theirChanges = (await runExport('/proxy/$export', bytes, { body: since2 })).manifest as Manifest;
    assert.deepEqual(await deletedIn(theirChanges, bytes), []);
  });
});
