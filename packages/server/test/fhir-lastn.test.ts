import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from 'fhir-kit-client';
import { Agent, setGlobalDispatcher } from 'undici';
import { auditEvents, type Caller, fhir, grant, grantedClient, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// Observation/$lastn (R4 observation-operation-lastn): the newest Observations of each code of one subject.
let p: TestPlatform;
let writer: Caller;
let auditor: Caller;
const LOINC = 'http://loinc.org';
const LOCAL = 'http://example.org/codes';
type Obj = Record<string, unknown>;
type Page = { total?: number; link?: { relation: string; url: string }[]; entry?: Entry[] };
type Entry = { resource: Obj & { id: string; resourceType: string }; search: { mode: string } };

const coding = (system: string, code: string) => ({ system, code });
function obs(id: string, patient: string, code: Obj, effective: Obj, extra: Obj = {}): Obj {
  return {
    resourceType: 'Observation',
    id,
    status: 'final',
    category: [
      { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] },
    ],
    code,
    subject: { reference: `Patient/${patient}` },
    ...effective,
    ...extra,
  };
}
const at = (day: string) => ({ effectiveDateTime: day });
const heart = { coding: [coding(LOINC, '8867-4')] };

/** Patient a's record; every group and its order below follows from these dates alone. */
const RECORD: Obj[] = [
  obs('hr1', 'a', heart, at('2024-01-01')),
  obs('hr2', 'a', heart, at('2024-03-01')),
  obs('hr3', 'a', heart, at('2024-02-01')),
  obs('hr-undated', 'a', heart, {}),
  // Not filtered by status, so an entered-in-error one counts (the operation says so).
  obs('hr-error', 'a', heart, at('2024-04-01'), { status: 'entered-in-error' }),
  obs('bp', 'a', { coding: [coding(LOINC, '85354-9')] }, at('2024-02-15')),
  // A Period is as recent as its end.
  obs(
    'w1',
    'a',
    { coding: [coding(LOINC, '29463-7')] },
    { effectivePeriod: { start: '2023-01-01', end: '2024-03-20' } },
  ),
  obs('w2', 'a', { coding: [coding(LOINC, '29463-7')] }, at('2024-03-15')),
  // temp-c's two codings make one group of all three (translations are equal, transitively).
  obs('temp-a', 'a', { coding: [coding(LOINC, '8310-5')] }, at('2023-05-01')),
  obs('temp-b', 'a', { coding: [coding(LOCAL, 'temp')] }, at('2023-06-01')),
  obs('temp-c', 'a', { coding: [coding(LOINC, '8310-5'), coding(LOCAL, 'temp')] }, at('2023-04-01')),
  // Text-only codes group by their exact text.
  obs('pain1', 'a', { text: 'Pijnscore' }, at('2024-01-10')),
  obs('pain2', 'a', { text: 'pijnscore' }, at('2024-01-11')),
  obs('lab', 'a', { coding: [coding(LOINC, '2345-7')] }, at('2024-05-01'), {
    category: [
      { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] },
    ],
  }),
  obs('hr-b', 'b', heart, at('2024-06-01')),
];

async function lastn(query: string, caller = writer, vault = 'ln') {
  return fhir(p, caller, 'GET', `/${vault}/Observation/$lastn?${query}`);
}
async function ids(query: string, caller = writer): Promise<string[]> {
  const r = await lastn(query, caller);
  assert.equal(r.status, 200, r.text);
  const page = r.json as unknown as Page;
  const matches = (page.entry ?? []).filter((e) => e.search.mode === 'match').map((e) => e.resource.id);
  assert.equal(page.total, matches.length);
  return matches;
}

before(async () => {
  p = await startPlatform();
  await partition(p, 'ln');
  await partition(p, 'ln_other');
  writer = await grantedClient(p, 'ln-writer', 'system/*.cruds', ['ln', 'ln_other']);
  auditor = await secretClient(p, 'ln-auditor', 'system/AuditEvent.rs');
  for (const id of ['a', 'b']) {
    for (const vault of ['ln', 'ln_other'])
      await fhir(p, writer, 'PUT', `/${vault}/Patient/${id}`, { resourceType: 'Patient', id });
  }
  for (const r of RECORD) {
    const put = await fhir(p, writer, 'PUT', `/ln/Observation/${r.id}`, r);
    assert.equal(put.status, 201, put.text);
  }
  // Another vault's newer heart rate of a patient with the same id.
  await fhir(p, writer, 'PUT', '/ln_other/Observation/elsewhere', obs('elsewhere', 'a', heart, at('2025-01-01')));
  setGlobalDispatcher(new Agent({ connect: { ca: p.ca } }));
});
after(() => p.stop());

describe('Observation/$lastn', () => {
  test('the newest of each code of the patient, groups in the order of their newest', async () => {
    assert.deepEqual(await ids('patient=a&category=vital-signs'), ['hr-error', 'w1', 'bp', 'pain2', 'pain1', 'temp-b']);
  });

  test('max: that many of each group, newest first, an undated one last', async () => {
    assert.deepEqual(await ids('patient=a&category=vital-signs&max=3'), [
      ...['hr-error', 'hr2', 'hr3'],
      ...['w1', 'w2'],
      'bp',
      'pain2',
      'pain1',
      ...['temp-b', 'temp-a', 'temp-c'],
    ]);
    const all = await ids('patient=a&category=vital-signs&max=10');
    assert.deepEqual(all.slice(0, 5), ['hr-error', 'hr2', 'hr3', 'hr1', 'hr-undated']);
    assert.equal(all.length, 13);
  });

  test('other search parameters narrow it; each subject has groups of its own; _include and _elements', async () => {
    assert.deepEqual(await ids(`subject=Patient/a&code=${LOINC}|8867-4&max=2`), ['hr-error', 'hr2']);
    assert.deepEqual(await ids(`patient=a&code=${LOINC}|8867-4&status=final&max=2`), ['hr2', 'hr3']);
    // w1's Period began before the date, and it is the newest of what matches.
    assert.deepEqual(await ids('patient=a&category=vital-signs&date=lt2024-02-01'), [
      'w1',
      'pain2',
      'pain1',
      'hr1',
      'temp-b',
    ]);
    assert.deepEqual(await ids(`patient=a,b&code=${LOINC}|8867-4`), ['hr-b', 'hr-error']);
    assert.deepEqual(await ids('patient=nobody&category=vital-signs'), []);

    const r = await lastn(`patient=a&code=${LOINC}|85354-9&_include=Observation:patient&_elements=code`);
    const page = r.json as unknown as Page;
    assert.deepEqual(
      page.entry?.map((e) => `${e.search.mode} ${e.resource.resourceType}/${e.resource.id}`),
      ['match Observation/bp', 'include Patient/a'],
    );
    const match = page.entry?.[0]?.resource as unknown as Obj & { meta: { tag: { code: string }[] } };
    assert.equal(match.status, 'final', 'mandatory elements stay');
    assert.equal(match.effectiveDateTime, undefined);
    assert.deepEqual(
      match.meta.tag.map((t) => t.code),
      ['SUBSETTED'],
    );
    const self = new URL(page.link?.find((l) => l.relation === 'self')?.url ?? '');
    assert.equal(self.pathname, '/fhir/ln/Observation/$lastn');
    assert.equal(self.searchParams.get('code'), `${LOINC}|85354-9`);
  });

  test('by fhir-kit-client, GET and POST with a Parameters body', async () => {
    const client = new Client({ baseUrl: `${p.fhirBase}/ln`, bearerToken: writer.token });
    const got = (await client.operation({
      name: 'lastn',
      resourceType: 'Observation',
      method: 'GET',
      input: { patient: 'a', category: 'vital-signs', max: 2 },
    })) as Page;
    assert.deepEqual(
      got.entry?.map((e) => e.resource.id),
      ['hr-error', 'hr2', 'w1', 'w2', 'bp', 'pain2', 'pain1', 'temp-b', 'temp-a'],
    );
    const posted = (await client.operation({
      name: 'lastn',
      resourceType: 'Observation',
      input: {
        resourceType: 'Parameters',
        parameter: [
          { name: 'patient', valueString: 'a' },
          { name: 'code', valueString: `${LOINC}|29463-7` },
          { name: 'max', valuePositiveInt: 1 },
        ],
      },
    })) as Page;
    assert.deepEqual(
      posted.entry?.map((e) => e.resource.id),
      ['w1'],
    );
  });

  test('refused: no subject, no code or category, paging and sorting, a bad max; strict handling', async () => {
    const refusals: [string, RegExp][] = [
      ['category=vital-signs', /needs the subject/],
      ['patient:missing=false&category=vital-signs', /needs the subject/],
      ['patient=a&status=final', /needs a category, code/],
      ['patient=a&category=vital-signs&_sort=date', /_sort is not taken/],
      ['patient=a&category=vital-signs&_count=5', /_count is not taken/],
      ['patient=a&category=vital-signs&_summary=count', /_summary is not taken/],
      ['patient=a&category=vital-signs&max=0', /max must be a whole number from 1/],
      ['patient=a&category=vital-signs&max=two', /max must be a whole number from 1/],
      ['patient=a&category=vital-signs&max=1&max=2', /max is given once/],
      ['patient=a&category=vital-signs&date=yesterday', /date/],
    ];
    for (const [query, reason] of refusals) {
      const r = await lastn(query);
      assert.equal(r.status, 400, query);
      assert.match(r.text, reason, query);
    }
    const lenient = await lastn('patient=a&category=vital-signs&unknown=1');
    assert.equal(lenient.status, 200);
    const strict = await fhir(
      p,
      writer,
      'GET',
      '/ln/Observation/$lastn?patient=a&category=vital-signs&unknown=1',
      undefined,
      {
        prefer: 'handling=strict',
      },
    );
    assert.equal(strict.status, 400, strict.text);
  });

  test("another vault's Observations, a granular scope and a reader without Observation search", async () => {
    assert.deepEqual(
      ((await lastn('patient=a&category=vital-signs', writer, 'ln_other')).json as unknown as Page).entry?.map(
        (e) => e.resource.id,
      ),
      ['elsewhere'],
    );
    const heartOnly = await secretClient(p, 'ln-heart', `system/Observation.rs?code=${LOINC}|8867-4`);
    await grant(p, { partition: 'ln', client: 'ln-heart', scope: 'system/Observation.rs' });
    assert.deepEqual(await ids('patient=a&category=vital-signs&max=2', heartOnly), ['hr-error', 'hr2']);
    const patientsOnly = await grantedClient(p, 'ln-patients', 'system/Patient.rs', ['ln']);
    assert.equal((await lastn('patient=a&category=vital-signs', patientsOnly)).status, 403);
    const stranger = await secretClient(p, 'ln-stranger', 'system/*.rs');
    assert.equal((await lastn('patient=a&category=vital-signs', stranger)).status, 404);
  });

  test('the CapabilityStatement lists it on Observation', async () => {
    const r = await fhir(p, undefined, 'GET', '/ln/metadata');
    type Resource = { type: string; operation?: { name: string; definition: string }[] };
    const observation = (r.json as { rest: { resource: Resource[] }[] }).rest[0]?.resource.find(
      (x) => x.type === 'Observation',
    );
    assert.deepEqual(observation?.operation, [
      { name: 'lastn', definition: 'http://hl7.org/fhir/OperationDefinition/Observation-lastn' },
    ]);
  });

  test('audited as an operation on the patient it names', async () => {
    await ids('patient=b&category=vital-signs');
    type Event = { entity?: { what?: { reference?: string }; query?: string }[] };
    const events = await auditEvents<Event>(p, auditor, 'subtype=operation&_count=1000');
    const queries = events.flatMap((e) => e.entity ?? []).filter((x) => x.query);
    const asked = queries.map((x) => Buffer.from(x.query as string, 'base64').toString());
    assert.ok(asked.includes('Observation/$lastn?patient=b&category=vital-signs'), asked.join('\n'));
    const event = events.find((e) =>
      (e.entity ?? []).some(
        (x) =>
          x.query && Buffer.from(x.query, 'base64').toString() === 'Observation/$lastn?patient=b&category=vital-signs',
      ),
    );
    assert.ok(event?.entity?.some((x) => x.what?.reference?.endsWith('Patient/b')));
  });
});
