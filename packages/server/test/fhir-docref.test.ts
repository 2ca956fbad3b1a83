import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from 'fhir-kit-client';
import { Agent, setGlobalDispatcher } from 'undici';
import { type Caller, fhir, grantedClient, partition } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// US Core DocumentReference/$docref (seed 004's Patient Access API is US Core): a patient's documents by care
// period and type, or the most recent CCD.
let p: TestPlatform;
let writer: Caller;
const LOINC = 'http://loinc.org';
const CCD = '34133-9';
const NOTE = '11506-3';
type Page = { entry?: { resource: { id: string } }[] };

function doc(id: string, patient: string, type: string, date: string, period: [string, string], status = 'current') {
  return {
    resourceType: 'DocumentReference',
    id,
    status,
    type: { coding: [{ system: LOINC, code: type }] },
    subject: { reference: `Patient/${patient}` },
    date: `${date}T12:00:00Z`,
    content: [{ attachment: { contentType: 'text/plain', url: `https://example.org/documents/${id}` } }],
    context: { period: { start: period[0], end: period[1] } },
  };
}

const DOCS = [
  doc('ccd-old', 'p', CCD, '2023-01-01', ['2022-12-01', '2022-12-31']),
  doc('ccd-new', 'p', CCD, '2024-06-01', ['2024-05-01', '2024-05-31']),
  doc('ccd-replaced', 'p', CCD, '2025-01-01', ['2024-12-01', '2024-12-31'], 'superseded'),
  doc('note', 'p', NOTE, '2024-07-01', ['2024-07-01', '2024-07-01']),
  doc('note-old', 'p', NOTE, '2021-01-01', ['2021-01-01', '2021-01-01']),
  doc('ccd-q', 'q', CCD, '2025-02-01', ['2025-01-01', '2025-01-31']),
];

async function docref(query: string, caller = writer, vault = 'dr') {
  return fhir(p, caller, 'GET', `/${vault}/DocumentReference/$docref?${query}`);
}
async function ids(query: string, vault = 'dr'): Promise<string[]> {
  const r = await docref(query, writer, vault);
  assert.equal(r.status, 200, `${query}: ${r.text}`);
  return ((r.json as unknown as Page).entry ?? []).map((e) => e.resource.id).sort();
}

before(async () => {
  p = await startPlatform();
  await partition(p, 'dr');
  await partition(p, 'dr_other');
  writer = await grantedClient(p, 'dr-writer', 'system/*.cruds', ['dr', 'dr_other']);
  for (const vault of ['dr', 'dr_other'])
    for (const id of ['p', 'q'])
      await fhir(p, writer, 'PUT', `/${vault}/Patient/${id}`, { resourceType: 'Patient', id });
  for (const d of DOCS) {
    const put = await fhir(p, writer, 'PUT', `/dr/DocumentReference/${d.id}`, d);
    assert.equal(put.status, 201, put.text);
  }
  const elsewhere = doc('ccd-elsewhere', 'p', CCD, '2026-01-01', ['2025-12-01', '2025-12-31']);
  await fhir(p, writer, 'PUT', '/dr_other/DocumentReference/ccd-elsewhere', elsewhere);
  setGlobalDispatcher(new Agent({ connect: { ca: p.ca } }));
});
after(() => p.stop());

describe('DocumentReference/$docref', () => {
  test('without dates: the most recent current document of the type, a CCD when no type is named', async () => {
    assert.deepEqual(await ids('patient=p'), ['ccd-new']);
    assert.deepEqual(await ids(`patient=Patient/p&type=${LOINC}|${NOTE}`), ['note']);
    assert.deepEqual(await ids('patient=q'), ['ccd-q']);
    assert.deepEqual(await ids('patient=nobody'), []);
    assert.deepEqual(await ids('patient=p', 'dr_other'), ['ccd-elsewhere']);
  });

  test('with start and/or end: every current document whose care period overlaps, of the type if named', async () => {
    assert.deepEqual(await ids('patient=p&start=2024-01-01'), ['ccd-new', 'note']);
    assert.deepEqual(await ids('patient=p&start=2022-01-01&end=2023-12-31'), ['ccd-old']);
    assert.deepEqual(await ids('patient=p&end=2021-12-31'), ['note-old']);
    assert.deepEqual(await ids(`patient=p&start=2020&type=${LOINC}|${CCD}`), ['ccd-new', 'ccd-old']);
    assert.deepEqual(await ids('patient=p&start=2024-05-31T23:00:00Z&end=2024-06-30'), ['ccd-new']);
  });

  test('by fhir-kit-client: GET, and POST with a Parameters body whose type is a Coding', async () => {
    const client = new Client({ baseUrl: `${p.fhirBase}/dr`, bearerToken: writer.token });
    const got = (await client.operation({
      name: 'docref',
      resourceType: 'DocumentReference',
      method: 'GET',
      input: { patient: 'p', start: '2024-07-01' },
    })) as Page;
    assert.deepEqual(
      got.entry?.map((e) => e.resource.id),
      ['note'],
    );
    const posted = (await client.operation({
      name: 'docref',
      resourceType: 'DocumentReference',
      input: {
        resourceType: 'Parameters',
        parameter: [
          { name: 'patient', valueId: 'p' },
          { name: 'type', valueCoding: { system: LOINC, code: NOTE } },
          { name: 'end', valueDate: '2022-01-01' },
        ],
      },
    })) as Page;
    assert.deepEqual(
      posted.entry?.map((e) => e.resource.id),
      ['note-old'],
    );
  });

  test('refused: no patient, bad dates, on-demand, unknown parameters; Observation-only clients 403', async () => {
    for (const [query, status, reason] of [
      ['start=2024', 400, /needs the patient/],
      ['patient=p&patient=q', 400, /patient is given once/],
      ['patient=p&start=yesterday', 400, /start must be a date/],
      ['patient=p&on-demand=true', 400, /assembles none on demand/],
      ['patient=p&on-demand=perhaps', 400, /on-demand must be true or false/],
      ['patient=p&_count=5', 400, /unknown parameter _count/],
      ['patient=not%20an%20id', 400, /is not a Patient id/],
    ] as const) {
      const r = await docref(query);
      assert.equal(r.status, status, `${query}: ${r.text}`);
      assert.match(r.text, reason, query);
    }
    assert.deepEqual(await ids('patient=p&on-demand=false'), ['ccd-new']);
    const observations = await grantedClient(p, 'dr-obs', 'system/Observation.rs', ['dr']);
    assert.equal((await docref('patient=p', observations)).status, 403);
  });

  test('the CapabilityStatement names US Core Fetch DocumentReference', async () => {
    const r = await fhir(p, undefined, 'GET', '/dr/metadata');
    type Resource = { type: string; operation?: { name: string; definition: string }[] };
    const resources = (r.json as { rest: { resource: Resource[] }[] }).rest[0]?.resource;
    assert.deepEqual(resources?.find((x) => x.type === 'DocumentReference')?.operation, [
      { name: 'docref', definition: 'http://hl7.org/fhir/us/core/OperationDefinition/docref' },
    ]);
  });
});
