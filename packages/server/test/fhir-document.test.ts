import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from 'fhir-kit-client';
import { Agent, setGlobalDispatcher } from 'undici';
import { auditEvents, type Caller, fhir, grant, grantedClient, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// Composition/$document (R4 composition-operation-document): a document Bundle of a Composition and what it
// refers to, of this vault, as far as the caller may read.
let p: TestPlatform;
let writer: Caller;
let auditor: Caller;
type Obj = Record<string, unknown>;
type Doc = {
  resourceType: string;
  id?: string;
  type: string;
  identifier?: { system: string; value: string };
  timestamp?: string;
  entry?: { fullUrl: string; resource: { resourceType: string; id: string } }[];
};
const patient = { reference: 'Patient/pat' };

const RECORD: Obj[] = [
  {
    resourceType: 'Patient',
    id: 'pat',
    generalPractitioner: [{ reference: 'Practitioner/gp' }],
    managingOrganization: { reference: 'Organization/org' },
  },
  { resourceType: 'Practitioner', id: 'author' },
  { resourceType: 'Practitioner', id: 'gp' },
  { resourceType: 'Organization', id: 'org', name: 'Huisartsenpraktijk' },
  // Named by the Composition only, in elements no search parameter indexes (custodian, section.author).
  { resourceType: 'Organization', id: 'keeper', name: 'Archief' },
  { resourceType: 'Practitioner', id: 'reviewer' },
  { resourceType: 'Encounter', id: 'enc', status: 'finished', class: { code: 'AMB' }, subject: patient },
  {
    resourceType: 'Observation',
    id: 'obs1',
    status: 'final',
    code: { text: 'Hb' },
    subject: patient,
    encounter: { reference: 'Encounter/enc' },
    performer: [{ reference: 'Practitioner/author' }],
  },
  { resourceType: 'Observation', id: 'unrelated', status: 'final', code: { text: 'other' }, subject: patient },
  { resourceType: 'Condition', id: 'cond', subject: patient, asserter: { reference: 'Practitioner/gp' } },
  { resourceType: 'Medication', id: 'm1', code: { text: 'paracetamol' } },
  {
    resourceType: 'MedicationStatement',
    id: 'med',
    status: 'active',
    medicationReference: { reference: 'Medication/m1' },
    subject: patient,
  },
  {
    resourceType: 'Composition',
    id: 'comp',
    status: 'final',
    type: { coding: [{ system: 'http://loinc.org', code: '60591-5' }] },
    subject: patient,
    encounter: { reference: 'Encounter/enc' },
    date: '2026-12-01',
    author: [{ reference: 'Practitioner/author' }],
    title: 'Patient summary',
    custodian: { reference: 'Organization/keeper' },
    section: [
      { title: 'Results', entry: [{ reference: 'Observation/obs1' }, { reference: 'Observation/missing' }] },
      { title: 'Problems', author: [{ reference: 'Practitioner/reviewer' }], entry: [{ reference: 'Condition/cond' }] },
      { title: 'Medication', entry: [{ reference: 'MedicationStatement/med' }] },
    ],
  },
];
const WHOLE = [
  'Composition/comp',
  'Condition/cond',
  'Encounter/enc',
  'Medication/m1',
  'MedicationStatement/med',
  'Observation/obs1',
  'Organization/keeper',
  'Organization/org',
  'Patient/pat',
  'Practitioner/author',
  'Practitioner/gp',
  'Practitioner/reviewer',
];

const keys = (d: Doc) => (d.entry ?? []).map((e) => `${e.resource.resourceType}/${e.resource.id}`);
async function document(path: string, caller = writer, method = 'GET', body?: Obj) {
  return fhir(p, caller, method, `/doc/${path}`, body);
}

before(async () => {
  p = await startPlatform();
  await partition(p, 'doc');
  await partition(p, 'doc_other');
  writer = await grantedClient(p, 'doc-writer', 'system/*.cruds', ['doc', 'doc_other']);
  auditor = await secretClient(p, 'doc-auditor', 'system/AuditEvent.rs');
  for (const r of RECORD) {
    const put = await fhir(p, writer, 'PUT', `/doc/${r.resourceType}/${r.id}`, r);
    assert.equal(put.status, 201, put.text);
  }
  setGlobalDispatcher(new Agent({ connect: { ca: p.ca } }));
});
after(() => p.stop());

describe('Composition/$document', () => {
  test('the Composition first, then everything it refers to and what that refers to; nothing else', async () => {
    const r = await document('Composition/comp/$document');
    assert.equal(r.status, 200, r.text);
    const doc = r.json as unknown as Doc;
    assert.equal(doc.type, 'document');
    assert.equal(doc.identifier?.system, 'urn:ietf:rfc:3986');
    assert.match(doc.identifier?.value ?? '', /^urn:uuid:[0-9a-f-]{36}$/);
    assert.ok(Math.abs(Date.parse(doc.timestamp ?? '') - Date.now()) < 60_000);
    assert.equal(keys(doc)[0], 'Composition/comp');
    assert.deepEqual([...keys(doc)].sort(), WHOLE);
    for (const e of doc.entry ?? [])
      assert.equal(e.fullUrl, `${p.fhirBase}/doc/${e.resource.resourceType}/${e.resource.id}`);
    // A valid R4 document Bundle (bdl-9, -10, -11 and the rest), by the server's own $validate.
    const validated = await fhir(p, writer, 'POST', '/doc/Bundle/$validate', doc);
    assert.equal(validated.status, 200, validated.text);
    assert.ok(!validated.text.includes('"severity":"error"'), validated.text);

    const byId = await document('Composition/$document?id=comp');
    assert.deepEqual([...keys(byId.json as unknown as Doc)].sort(), WHOLE);
  });

  test('by fhir-kit-client; persist=true by POST stores the Bundle and answers it', async () => {
    const client = new Client({ baseUrl: `${p.fhirBase}/doc`, bearerToken: writer.token });
    const got = (await client.operation({
      name: 'document',
      resourceType: 'Composition',
      id: 'comp',
      method: 'GET',
    })) as unknown as Doc;
    assert.deepEqual([...keys(got)].sort(), WHOLE);
    const stored = (await client.operation({
      name: 'document',
      resourceType: 'Composition',
      id: 'comp',
      input: { resourceType: 'Parameters', parameter: [{ name: 'persist', valueBoolean: true }] },
    })) as unknown as Doc;
    assert.ok(stored.id);
    const read = await fhir(p, writer, 'GET', `/doc/Bundle/${stored.id}`);
    assert.equal(read.status, 200);
    const kept = read.json as unknown as Doc;
    assert.equal(kept.type, 'document');
    assert.deepEqual([...keys(kept)].sort(), WHOLE);
  });

  test('what the token may not read is left out; persist needs Bundle create', async () => {
    const three = await grantedClient(p, 'doc-three', 'system/Composition.rs system/Patient.rs system/Observation.rs', [
      'doc',
    ]);
    const r = await document('Composition/comp/$document', three);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual([...keys(r.json as unknown as Doc)].sort(), [
      'Composition/comp',
      'Observation/obs1',
      'Patient/pat',
    ]);
    // A granular scope narrows what is in the document as it narrows a search (obs1 is final).
    const narrow = await secretClient(
      p,
      'doc-narrow',
      'system/Composition.rs system/Patient.rs system/Observation.rs?status=preliminary',
    );
    await grant(p, {
      partition: 'doc',
      client: 'doc-narrow',
      scope: 'system/Composition.rs system/Patient.rs system/Observation.rs',
    });
    const narrowed = await document('Composition/comp/$document', narrow);
    assert.deepEqual([...keys(narrowed.json as unknown as Doc)].sort(), ['Composition/comp', 'Patient/pat']);
    const persisted = await document('Composition/comp/$document?persist=true', three, 'POST');
    assert.equal(persisted.status, 403, persisted.text);
    const noComposition = await grantedClient(p, 'doc-patients', 'system/Patient.rs', ['doc']);
    assert.equal((await document('Composition/comp/$document', noComposition)).status, 403);
  });

  test("another vault's, a stranger's, an unknown Composition are 404; bad parameters are 400", async () => {
    assert.equal((await fhir(p, writer, 'GET', '/doc_other/Composition/comp/$document')).status, 404);
    const stranger = await secretClient(p, 'doc-stranger', 'system/*.rs');
    assert.equal((await document('Composition/comp/$document', stranger)).status, 404);
    assert.equal((await document('Composition/nothing/$document')).status, 404);
    for (const [path, reason] of [
      ['Composition/$document', /takes the Composition/],
      ['Composition/comp/$document?id=comp', /on an instance \$document takes no id/],
      ['Composition/comp/$document?graph=http://example.org/g', /graph is not supported/],
      ['Composition/comp/$document?persist=true', /persist=true stores a Bundle, so it is a POST/],
      ['Composition/comp/$document?persist=maybe', /persist must be true or false/],
      ['Composition/comp/$document?_count=3', /unknown parameter _count/],
      ['Composition/$document?id=not%20an%20id', /is not a Composition id/],
    ] as const) {
      const r = await document(path);
      assert.equal(r.status, 400, `${path}: ${r.text}`);
      assert.match(r.text, reason, path);
    }
  });

  test('the CapabilityStatement lists it on Composition', async () => {
    const r = await fhir(p, undefined, 'GET', '/doc/metadata');
    type Resource = { type: string; operation?: { name: string; definition: string }[] };
    const resources = (r.json as { rest: { resource: Resource[] }[] }).rest[0]?.resource;
    assert.deepEqual(resources?.find((x) => x.type === 'Composition')?.operation, [
      { name: 'document', definition: 'http://hl7.org/fhir/OperationDefinition/Composition-document' },
    ]);
  });

  test('audited as an operation on the Composition and its patient', async () => {
    await document('Composition/comp/$document');
    type Event = { entity?: { description?: string; what?: { reference?: string } }[] };
    const events = await auditEvents<Event>(p, auditor, 'subtype=operation&_count=1000');
    const audited = events
      .map((e) => e.entity ?? [])
      .filter((entity) => entity.some((x) => x.description === '$document'));
    assert.ok(audited.length >= 1);
    const refs = audited[0]?.map((x) => x.what?.reference ?? '') ?? [];
    assert.ok(
      refs.some((ref) => /Composition\/comp\/_history\/1$/.test(ref)),
      refs.join(),
    );
    assert.ok(
      refs.some((ref) => ref.endsWith('Patient/pat')),
      refs.join(),
    );
  });
});
