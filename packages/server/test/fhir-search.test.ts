import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { importCommand } from '../src/admin/import.ts';
import { account, type Caller, fhir, grant, grantedClient, partition } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// FHIR search (search.html) over the index built from the official R4 SearchParameters.
let p: TestPlatform;
let tcu: Caller;
let other: Caller;
const ids: Record<string, string> = {};

type Bundle = {
  total?: number;
  link: { relation: string; url: string }[];
  entry?: { fullUrl: string; resource: Record<string, unknown>; search: { mode: string } }[];
};

async function put(resource: Record<string, unknown>, vault = 'v1') {
  const r = await fhir(p, tcu, 'PUT', `/${vault}/${resource.resourceType}/${resource.id}`, resource);
  assert.ok(r.status === 201 || r.status === 200, r.text);
}

async function searchIds(query: string, caller = tcu, vault = 'v1'): Promise<string[]> {
  const r = await fhir(p, caller, 'GET', `/${vault}/${query}`);
  assert.equal(r.status, 200, `${query} → ${r.text}`);
  const b = r.json as unknown as Bundle;
  return (b.entry ?? [])
    .filter((e) => e.search.mode === 'match')
    .map((e) => e.resource.id as string)
    .sort();
}

const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category';

before(async () => {
  p = await startPlatform();
  await account(p, 'urn:cara:account:v1');
  await partition(p, 'v2');
  tcu = await grantedClient(p, 'search-tcu', 'system/*.cruds', ['v1', 'v2']);
  other = await grantedClient(p, 'search-other', 'system/*.rs', ['v2']);

  await put({
    resourceType: 'Organization',
    id: 'org1',
    name: 'Best Clinic',
    identifier: [{ system: 'urn:oid:2.16.528.1', value: 'BC' }],
  });
  await put({
    resourceType: 'Patient',
    id: 'peter',
    gender: 'male',
    birthDate: '1990-03-15',
    managingOrganization: { reference: 'Organization/org1' },
    name: [{ family: 'Müller', given: ['Peter'] }],
    identifier: [{ system: 'urn:cara:mpi', value: 'MPI-1' }],
  });
  await put({
    resourceType: 'Patient',
    id: 'anna',
    gender: 'female',
    birthDate: '2001-07',
    name: [{ family: 'Smith', given: ['Anna'] }],
  });
  await put({ resourceType: 'Patient', id: 'nogender', name: [{ family: 'Smithers' }] });
  const obs = (id: string, patient: string, code: string, cat: string, value: number, date: string) => ({
    resourceType: 'Observation',
    id,
    status: 'final',
    subject: { reference: `Patient/${patient}` },
    effectiveDateTime: date,
    category: [{ coding: [{ system: LAB, code: cat }] }],
    code: { coding: [{ system: 'http://loinc.org', code }], text: code === '8867-4' ? 'Heart rate' : 'Glucose' },
    valueQuantity: { value, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
    meta: { tag: [{ system: 'https://terminology.cara.ch/CodeSystem/fhirvault-namespace', code: 'cara:scp' }] },
  });
  await put(obs('o1', 'peter', '8867-4', 'vital-signs', 72, '2024-01-10T08:00:00Z'));
  await put(obs('o2', 'peter', '2339-0', 'laboratory', 5.4, '2024-02-10T08:00:00Z'));
  await put(obs('o3', 'anna', '2339-0', 'laboratory', 6.1, '2023-12-31T23:00:00Z'));
  await put({
    resourceType: 'Goal',
    id: 'g1',
    lifecycleStatus: 'active',
    description: { text: 'walk' },
    subject: { reference: 'Patient/peter' },
  });
  await put({
    resourceType: 'CareTeam',
    id: 'ct1',
    status: 'active',
    participant: [{ member: { reference: 'Organization/org1' } }],
    subject: { reference: 'Patient/peter' },
  });
  await put({
    resourceType: 'CarePlan',
    id: 'cp1',
    status: 'active',
    intent: 'plan',
    subject: { reference: 'Patient/peter' },
    meta: {
      profile: ['https://terminology.cara.ch/StructureDefinition/ScpCarePlan'],
      tag: [{ system: 'https://terminology.cara.ch/CodeSystem/fhirvault-namespace', code: 'cara:scp' }],
    },
    goal: [{ reference: 'Goal/g1' }],
    careTeam: [{ reference: 'CareTeam/ct1' }],
  });
  await put({
    resourceType: 'Provenance',
    id: 'prov1',
    target: [{ reference: 'Observation/o1' }],
    recorded: '2024-01-10T08:00:00Z',
    agent: [{ who: { reference: 'Organization/org1' } }],
  });
  // Another vault with look-alike data that must never show up in v1.
  await put({ resourceType: 'Patient', id: 'peter', gender: 'male', name: [{ family: 'Müller' }] }, 'v2');
  await put(
    {
      resourceType: 'Observation',
      id: 'x1',
      status: 'final',
      code: { text: 'x' },
      subject: { reference: 'Patient/peter' },
    },
    'v2',
  );
  await put(
    {
      resourceType: 'Provenance',
      id: 'provx',
      target: [{ reference: 'Observation/o1' }],
      recorded: '2024-01-10T08:00:00Z',
      agent: [{ who: { display: 'x' } }],
    },
    'v2',
  );
  ids.done = 'yes';
});
after(() => p.stop());

describe('parameter types (J26 J33–J39)', () => {
  test('token: code, system|code, |code, system|, :not, :text (J33 J34)', async () => {
    assert.deepEqual(await searchIds('Observation?code=2339-0'), ['o2', 'o3']);
    assert.deepEqual(await searchIds('Observation?code=http://loinc.org|8867-4'), ['o1']);
    assert.deepEqual(await searchIds('Observation?code=http://snomed.info/sct|8867-4'), []);
    assert.deepEqual(await searchIds('Observation?code=http://loinc.org|'), ['o1', 'o2', 'o3']);
    assert.deepEqual(await searchIds('Patient?gender=|male'), ['peter']);
    assert.deepEqual(await searchIds('Patient?gender:not=male'), ['anna', 'nogender']);
    assert.deepEqual(await searchIds('Observation?code:text=heart'), ['o1']);
    assert.deepEqual(await searchIds('Patient?identifier=urn:cara:mpi|MPI-1'), ['peter']);
    assert.deepEqual(await searchIds('Observation?code=8867-4,2339-0'), ['o1', 'o2', 'o3'], 'comma = OR');
  });

  test('string: starts-with, case and accent insensitive; :exact; :contains (J35)', async () => {
    assert.deepEqual(await searchIds('Patient?family=smi'), ['anna', 'nogender']);
    assert.deepEqual(await searchIds('Patient?family=muller'), ['peter']);
    assert.deepEqual(await searchIds('Patient?family:exact=Smith'), ['anna']);
    assert.deepEqual(await searchIds('Patient?family:exact=smith'), []);
    assert.deepEqual(await searchIds('Patient?family:contains=ith'), ['anna', 'nogender']);
    assert.deepEqual(await searchIds('Patient?name=pet'), ['peter']);
    assert.deepEqual(await searchIds('Patient?family:contains=%25'), [], 'LIKE wildcards are literal');
  });

  test('reference: Type/id ≡ id ≡ absolute URL; :Type; chaining; _has (J36)', async () => {
    const abs = encodeURIComponent(`${p.fhirBase}/v1/Patient/peter`);
    for (const q of [
      'subject=Patient/peter',
      'subject=peter',
      `subject=${abs}`,
      'subject:Patient=peter',
      'patient=peter',
    ]) {
      assert.deepEqual(await searchIds(`Observation?${q}`), ['o1', 'o2'], q);
    }
    assert.deepEqual(await searchIds('Observation?subject:Patient.name=peter'), ['o1', 'o2']);
    assert.deepEqual(await searchIds('Observation?patient.gender=female'), ['o3']);
    assert.deepEqual(await searchIds('Observation?subject.organization.name=best'), ['o1', 'o2']);
    assert.deepEqual(await searchIds('Patient?_has:Observation:patient:code=8867-4'), ['peter']);
    assert.deepEqual(await searchIds('Patient?_has:Observation:patient:code=2339-0'), ['anna', 'peter']);
  });

  test('reference :identifier matches Reference.identifier, also of logical references (search.html#modifiers)', async () => {
    await partition(p, 'idv');
    await grant(p, { partition: 'idv', client: 'search-tcu', scope: 'system/*.cruds' });
    const BSN = 'http://fhir.nl/fhir/NamingSystem/bsn';
    const obs = (id: string, subject: Record<string, unknown>) => ({
      resourceType: 'Observation',
      id,
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
      subject,
    });
    for (const o of [
      obs('logical', { identifier: { system: BSN, value: '999911120' } }),
      obs('literal', { reference: 'Patient/x', identifier: { system: BSN, value: '999911120' } }),
      obs('typed', { type: 'Patient', identifier: { system: BSN, value: '999911120' } }),
      obs('group', { type: 'Group', identifier: { system: BSN, value: '999911120' } }),
      obs('other-system', { identifier: { system: 'urn:other', value: '999911120' } }),
      obs('other-value', { identifier: { system: BSN, value: '123' } }),
      obs('plain', { reference: 'Patient/x' }),
    ]) {
      await put(o, 'idv');
    }
    // The same identifier in another vault is never a match here.
    await put(obs('elsewhere', { identifier: { system: BSN, value: '999911120' } }), 'v2');
    const ids = (q: string) => searchIds(`Observation?${q}`, tcu, 'idv');
    const all = ['group', 'literal', 'logical', 'typed'];
    assert.deepEqual(await ids(`subject:identifier=${BSN}|999911120`), all);
    assert.deepEqual(await ids('subject:identifier=999911120'), [...all, 'other-system'].sort());
    assert.deepEqual(await ids('subject:identifier=urn:other|'), ['other-system']);
    assert.deepEqual(await ids(`subject:identifier=${BSN}|123,urn:other|999911120`), ['other-system', 'other-value']);
    // `patient` refers to Patients only: a reference that says it is one, by type or by its literal reference.
    assert.deepEqual(await ids(`patient:identifier=${BSN}|999911120`), ['literal', 'typed']);
    // Beside another condition, and as the condition of a conditional update.
    assert.deepEqual(await ids(`subject:identifier=${BSN}|999911120&subject=Patient/x`), ['literal']);
    const bad = await fhir(p, tcu, 'GET', '/idv/Observation?subject:identifier=a|b|c');
    assert.equal(bad.status, 400, bad.text);
    const moved = obs('logical', { identifier: { system: BSN, value: '555' } });
    assert.equal(
      (await fhir(p, tcu, 'PUT', `/idv/Observation?subject:identifier=${BSN}|999911120&_id=logical`, moved)).status,
      200,
    );
    assert.deepEqual(await ids(`subject:identifier=${BSN}|555`), ['logical']);
    assert.deepEqual(await ids(`subject:identifier=${BSN}|999911120`), ['group', 'literal', 'typed']);
  });

  test('identifier :of-type matches the type and the value of one Identifier (search.html#modifiers)', async () => {
    await partition(p, 'oftype');
    await grant(p, { partition: 'oftype', client: 'search-tcu', scope: 'system/*.cruds' });
    const V2 = 'http://terminology.hl7.org/CodeSystem/v2-0203';
    const identifier = (code: string, value: string) => ({
      type: { coding: [{ system: V2, code }] },
      system: 'urn:oid:2.16.840.1.113883.19.5',
      value,
    });
    await put({ resourceType: 'Patient', id: 'mr', identifier: [identifier('MR', '12345')] }, 'oftype');
    await put({ resourceType: 'Patient', id: 'dl', identifier: [identifier('DL', '12345')] }, 'oftype');
    // The type of one identifier and the value of another do not make a match.
    await put(
      { resourceType: 'Patient', id: 'mixed', identifier: [identifier('MR', '999'), identifier('DL', '12345')] },
      'oftype',
    );
    await put({ resourceType: 'Patient', id: 'untyped', identifier: [{ system: 'urn:x', value: '12345' }] }, 'oftype');
    const ids = (q: string) => searchIds(`Patient?${q}`, tcu, 'oftype');
    assert.deepEqual(await ids(`identifier:of-type=${V2}|MR|12345`), ['mr']);
    assert.deepEqual(await ids(`identifier:of-type=${V2}|DL|12345`), ['dl', 'mixed']);
    assert.deepEqual(await ids(`identifier:of-type=${V2}|MR|12345,${V2}|MR|999`), ['mixed', 'mr']);
    assert.deepEqual(await ids('identifier=12345'), ['dl', 'mixed', 'mr', 'untyped']);
    for (const value of [`${V2}|MR`, `|MR|12345`, `${V2}|MR|`]) {
      const r = await fhir(p, tcu, 'GET', `/oftype/Patient?identifier:of-type=${value}`);
      assert.equal(r.status, 400, r.text);
      assert.match(r.text, /is not system\|code\|value/);
    }
  });

  test('date: precision as a range, prefixes, AND of two ranges (J37)', async () => {
    assert.deepEqual(await searchIds('Patient?birthdate=1990'), ['peter']);
    assert.deepEqual(await searchIds('Patient?birthdate=ge1990-01-01&birthdate=lt2000'), ['peter']);
    assert.deepEqual(await searchIds('Patient?birthdate=2001-07-04'), [], 'a month does not lie within a day');
    assert.deepEqual(await searchIds('Patient?birthdate=2001'), ['anna']);
    assert.deepEqual(await searchIds('Observation?date=2024'), ['o1', 'o2']);
    assert.deepEqual(await searchIds('Observation?date=lt2024-01-01'), ['o3']);
    assert.deepEqual(await searchIds('Observation?date=gt2024-01-31'), ['o2']);
    assert.deepEqual(await searchIds('Observation?date=sa2024-01-10T08:00:00Z'), ['o2']);
    assert.deepEqual(await searchIds('Observation?date=eb2024-01-10'), ['o3']);
    assert.deepEqual(
      await searchIds('Observation?date=2024-01-10T09:00:00%2B01:00'),
      ['o1'],
      'time zones are honoured',
    );
    // Years below 100 are themselves, not 1900–1999 (Date.UTC's reading of them).
    const ancient = { resourceType: 'Patient', id: 'ancient', birthDate: '0050-06-01' };
    assert.equal((await fhir(p, tcu, 'PUT', '/v1/Patient/ancient', ancient)).status, 201);
    try {
      assert.deepEqual(await searchIds('Patient?birthdate=0050'), ['ancient']);
      assert.deepEqual(await searchIds('Patient?birthdate=lt0050-07'), ['ancient']);
      assert.deepEqual(await searchIds('Patient?birthdate=1950'), []);
    } finally {
      await fhir(p, tcu, 'DELETE', '/v1/Patient/ancient');
    }
  });

  test('quantity and number: prefixes and implicit precision (J38)', async () => {
    assert.deepEqual(await searchIds('Observation?value-quantity=gt5.4'), ['o1', 'o3']);
    assert.deepEqual(await searchIds('Observation?value-quantity=5.4'), ['o2']);
    assert.deepEqual(await searchIds('Observation?value-quantity=5'), ['o2'], '5 means [4.5, 5.5)');
    assert.deepEqual(await searchIds('Observation?value-quantity=5.0'), [], '5.0 means [4.95, 5.05)');
    assert.deepEqual(await searchIds('Observation?value-quantity=6|http://unitsofmeasure.org|mg/dL'), ['o3']);
    assert.deepEqual(await searchIds('Observation?value-quantity=le6.1||mg/dL'), ['o2', 'o3']);
    assert.deepEqual(await searchIds('Observation?value-quantity=gt5|http://unitsofmeasure.org|kg'), []);
  });

  test('composite: code$value pairs from the same occurrence only (search.html#composite)', async () => {
    const bp = (id: string, sys: number, dia: number) => ({
      resourceType: 'Observation',
      id,
      status: 'final',
      subject: { reference: 'Patient/peter' },
      code: { coding: [{ system: 'http://loinc.org', code: '85354-9' }] },
      component: [
        {
          code: { coding: [{ system: 'http://loinc.org', code: '8480-6' }] },
          valueQuantity: { value: sys, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
        },
        {
          code: { coding: [{ system: 'http://loinc.org', code: '8462-4' }] },
          valueQuantity: { value: dia, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
        },
      ],
    });
    await partition(p, 'bp');
    await grant(p, { partition: 'bp', client: 'search-tcu', scope: 'system/*.cruds' });
    await put(bp('bp1', 120, 80), 'bp');
    await put(bp('bp2', 150, 95), 'bp');
    await put(
      {
        resourceType: 'Observation',
        id: 'glu',
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '2339-0' }] },
        valueQuantity: { value: 6.1 },
      },
      'bp',
    );
    const ids = (q: string) => searchIds(q, tcu, 'bp');
    assert.deepEqual(await ids('Observation?component-code-value-quantity=http://loinc.org|8480-6$gt140'), ['bp2']);
    assert.deepEqual(await ids('Observation?component-code-value-quantity=http://loinc.org|8480-6$gt100'), [
      'bp1',
      'bp2',
    ]);
    assert.deepEqual(
      await ids('Observation?component-code-value-quantity=http://loinc.org|8480-6$lt90'),
      [],
      "80 is the diastolic's value, not the systolic's",
    );
    assert.deepEqual(
      await ids('Observation?component-code-value-quantity=8462-4$90|http://unitsofmeasure.org|mm[Hg],8462-4$95'),
      ['bp2'],
    );
    assert.deepEqual(await ids('Observation?code-value-quantity=http://loinc.org|2339-0$gt6'), ['glu']);
    // A composite exists only where every component has a value: the panels have a code but no value[x].
    assert.deepEqual(await ids('Observation?code-value-quantity:missing=true'), ['bp1', 'bp2']);
    assert.deepEqual(await ids('Observation?code-value-quantity:missing=false'), ['glu']);
    assert.deepEqual(await ids('Observation?code-value-concept:missing=true'), ['bp1', 'bp2', 'glu']);
  });

  // An update replaces the resource's index rows: what changed must stop matching, what stayed must keep
  // matching, and a resource sent again unchanged must match as before, once. (Guards any shortcut there, such
  // as writing only the rows that differ — tried on PostgreSQL, docs/performance.md.)
  test('an update moves exactly the searchable values it changed; sent again unchanged, nothing moves', async () => {
    const ids = (q: string) => searchIds(q, tcu, 'bp');
    const systolic = 'Observation?component-code-value-quantity=http://loinc.org|8480-6';
    const diastolic = 'Observation?component-code-value-quantity=http://loinc.org|8462-4';
    const current = (await fhir(p, tcu, 'GET', '/bp/Observation/bp1')).json as Record<string, unknown> & {
      component: { valueQuantity: { value: number } }[];
    };
    (current.component[0] as { valueQuantity: { value: number } }).valueQuantity.value = 145;
    await put({ ...current, status: 'amended' }, 'bp');
    assert.deepEqual(await ids(`${systolic}$gt140`), ['bp1', 'bp2']);
    assert.deepEqual(await ids(`${systolic}$lt130`), [], 'the old systolic value no longer matches');
    assert.deepEqual(await ids(`${diastolic}$80`), ['bp1'], 'the unchanged diastolic value still matches');
    assert.deepEqual(await ids('Observation?status=final'), ['bp2', 'glu']);
    assert.deepEqual(await ids('Observation?status=amended'), ['bp1']);
    assert.deepEqual(await ids('Observation?subject=Patient/peter&code=http://loinc.org|85354-9'), ['bp1', 'bp2']);

    const again = (await fhir(p, tcu, 'GET', '/bp/Observation/bp1')).json as Record<string, unknown>;
    await put(again, 'bp');
    const counted = await fhir(p, tcu, 'GET', '/bp/Observation?status=amended&_total=accurate');
    assert.equal((counted.json as unknown as Bundle).total, 1);
    assert.deepEqual(await ids(`${systolic}$145`), ['bp1']);

    await put({ ...again, component: (again.component as unknown[]).slice(0, 1) }, 'bp');
    assert.deepEqual(await ids(`${diastolic}$80`), [], 'a removed component no longer matches');
    assert.deepEqual(await ids(`${systolic}$145`), ['bp1']);
  });

  test(':missing (J39), _id (J28), _lastUpdated (J29), _tag, _profile', async () => {
    assert.deepEqual(await searchIds('Patient?gender:missing=true'), ['nogender']);
    assert.deepEqual(await searchIds('Patient?birthdate:missing=false'), ['anna', 'peter']);
    assert.deepEqual(await searchIds('Patient?_id=anna,peter'), ['anna', 'peter']);
    assert.deepEqual(
      await searchIds(`Patient?_lastUpdated=gt${new Date(Date.now() + 3600_000).toISOString().slice(0, 19)}Z`),
      [],
    );
    assert.deepEqual(await searchIds('Patient?_lastUpdated=gt2020-01-01'), ['anna', 'nogender', 'peter']);
    assert.deepEqual(
      await searchIds('Observation?_tag=https://terminology.cara.ch/CodeSystem/fhirvault-namespace|cara:scp'),
      ['o1', 'o2', 'o3'],
    );
    assert.deepEqual(await searchIds('CarePlan?_profile=https://terminology.cara.ch/StructureDefinition/ScpCarePlan'), [
      'cp1',
    ]);
  });
});

describe('result shaping (J26 J30 J31 J32)', () => {
  test('searchset with match entries, self link of the applied params only, total on the last page', async () => {
    const r = await fhir(p, tcu, 'GET', '/v1/Observation?code=2339-0&unknown-param=1');
    const b = r.json as unknown as Bundle;
    assert.equal((r.json as { type: string }).type, 'searchset');
    assert.equal(b.total, 2);
    // A page past the end knows no total: it does not claim its offset as one.
    for (const q of ['_offset=50', '_offset=99999&_sort=date']) {
      const past = (await fhir(p, tcu, 'GET', `/v1/Observation?code=2339-0&${q}`)).json as unknown as Bundle;
      assert.equal(past.entry, undefined, q);
      assert.equal(past.total, undefined, q);
      const counted = await fhir(p, tcu, 'GET', `/v1/Observation?code=2339-0&${q}&_total=accurate`);
      assert.equal((counted.json as unknown as Bundle).total, 2, q);
    }
    const self = b.link.find((l) => l.relation === 'self')?.url ?? '';
    assert.ok(self.startsWith(`${p.fhirBase}/v1/Observation?`));
    assert.ok(self.includes('code=2339-0') && !self.includes('unknown-param'));
    const strict = await fhir(p, tcu, 'GET', '/v1/Observation?unknown-param=1', undefined, {
      prefer: 'handling=strict',
    });
    assert.equal(strict.status, 400);
  });

  test('_count pages with next links that keep _count; _total=accurate counts (J30)', async () => {
    const seen: string[] = [];
    let url: string | undefined = '/v1/Observation?_count=2&_total=accurate';
    let pages = 0;
    while (url) {
      const r = await fhir(p, tcu, 'GET', url);
      const b = r.json as unknown as Bundle;
      assert.equal(b.total, 3);
      assert.ok((b.entry ?? []).length <= 2);
      seen.push(...(b.entry ?? []).map((e) => e.resource.id as string));
      const next = b.link.find((l) => l.relation === 'next')?.url;
      if (next) assert.match(next, /_count=2/);
      url = next?.slice(p.fhirBase.length);
      pages++;
    }
    assert.equal(pages, 2);
    assert.deepEqual(seen.sort(), ['o1', 'o2', 'o3']);
    const count = await fhir(p, tcu, 'GET', '/v1/Observation?_summary=count');
    assert.equal((count.json as unknown as Bundle).total, 3);
    assert.equal((count.json as unknown as Bundle).entry, undefined);
    const huge = await fhir(p, tcu, 'GET', '/v1/Observation?_count=1000000');
    assert.equal(huge.status, 200, '_count is capped, not an error');
  });

  test('_sort (J31) and _elements', async () => {
    const r = await fhir(p, tcu, 'GET', '/v1/Observation?_sort=-date');
    assert.deepEqual(
      ((r.json as unknown as Bundle).entry ?? []).map((e) => e.resource.id),
      ['o2', 'o1', 'o3'],
    );
    const r2 = await fhir(p, tcu, 'GET', '/v1/Patient?_sort=family,-birthdate&_id=anna,nogender,peter');
    assert.deepEqual(
      ((r2.json as unknown as Bundle).entry ?? []).map((e) => e.resource.id),
      ['peter', 'anna', 'nogender'],
    );
    const r3 = await fhir(p, tcu, 'GET', '/v1/Patient?_id=anna&_elements=gender');
    const res = (r3.json as unknown as Bundle).entry?.[0]?.resource as Record<string, unknown>;
    assert.equal(res.gender, 'female');
    assert.equal(res.name, undefined);
    assert.ok(JSON.stringify(res.meta).includes('SUBSETTED'));
    // Mandatory elements (Observation.status, .code) come along unasked (search.html#elements: SHOULD).
    const r4 = await fhir(p, tcu, 'GET', '/v1/Observation?_id=o1&_elements=subject');
    const o1 = (r4.json as unknown as Bundle).entry?.[0]?.resource as Record<string, unknown>;
    assert.deepEqual(Object.keys(o1).sort(), ['code', 'id', 'meta', 'resourceType', 'status', 'subject']);
  });

  test('_include, _revinclude and :iterate — the CARA context query in one request (J32, domain §1.3)', async () => {
    const q =
      '/v1/CarePlan?_profile=https://terminology.cara.ch/StructureDefinition/ScpCarePlan' +
      '&_tag=https%3A%2F%2Fterminology.cara.ch%2FCodeSystem%2Ffhirvault-namespace%7Ccara:scp' +
      '&status=active&_include=CarePlan:goal&_include=CarePlan:care-team&_include:iterate=CareTeam:participant';
    const r = await fhir(p, tcu, 'GET', q);
    assert.equal(r.status, 200, r.text);
    const entries = (r.json as unknown as Bundle).entry ?? [];
    assert.deepEqual(
      entries.filter((e) => e.search.mode === 'match').map((e) => e.resource.id),
      ['cp1'],
    );
    assert.deepEqual(
      entries
        .filter((e) => e.search.mode === 'include')
        .map((e) => `${e.resource.resourceType}/${e.resource.id}`)
        .sort(),
      ['CareTeam/ct1', 'Goal/g1', 'Organization/org1'],
    );
    const rev = await fhir(
      p,
      tcu,
      'GET',
      '/v1/Observation?_id=o1&_include=Observation:patient&_revinclude=Provenance:target',
    );
    const revEntries = (rev.json as unknown as Bundle).entry ?? [];
    assert.deepEqual(revEntries.map((e) => `${e.search.mode}:${e.resource.resourceType}/${e.resource.id}`).sort(), [
      'include:Patient/peter',
      'include:Provenance/prov1',
      'match:Observation/o1',
    ]);
    const circular = await fhir(
      p,
      tcu,
      'GET',
      '/v1/Patient?_id=peter&_revinclude:iterate=Observation:patient&_include:iterate=Observation:patient',
    );
    assert.equal(circular.status, 200);
  });

  test('Patient compartment search: Patient/[id]/[type] narrows the search, pages under its own path, is audited', async () => {
    assert.deepEqual(await searchIds('Patient/peter/Observation'), ['o1', 'o2']);
    assert.deepEqual(await searchIds('Patient/peter/Observation?category=laboratory'), ['o2']);
    assert.deepEqual(await searchIds('Patient/anna/Observation'), ['o3']);
    assert.deepEqual(await searchIds('Patient/peter/CarePlan'), ['cp1']);
    assert.deepEqual(await searchIds('Patient/nobody/Observation'), [], 'an unknown patient: nothing, not 404');
    // The other vault's peter has Observation x1; this vault's compartment search never reaches it.
    assert.deepEqual(await searchIds('Patient/peter/Observation', tcu, 'v2'), ['x1']);
    assert.deepEqual(await searchIds('Patient/peter/Observation', other, 'v2'), ['x1']);
    assert.equal((await fhir(p, other, 'GET', '/v1/Patient/peter/Observation')).status, 404);

    const first = await fhir(p, tcu, 'GET', '/v1/Patient/peter/Observation?_count=1');
    const next = (first.json as unknown as Bundle).link.find((l) => l.relation === 'next')?.url ?? '';
    assert.ok(next.startsWith(`${p.fhirBase}/v1/Patient/peter/Observation?`), next);
    const second = await fhir(p, tcu, 'GET', next.slice(p.fhirBase.length));
    const both = [first, second].flatMap((r) => ((r.json as unknown as Bundle).entry ?? []).map((e) => e.resource.id));
    assert.deepEqual(both.sort(), ['o1', 'o2']);
    const posted = await fhir(p, tcu, 'POST', '/v1/Patient/peter/Observation/_search', 'code=8867-4', {
      'content-type': 'application/x-www-form-urlencoded',
    });
    assert.deepEqual(
      ((posted.json as unknown as Bundle).entry ?? []).map((e) => e.resource.id),
      ['o1'],
    );

    for (const [path, status, message] of [
      ['/v1/Patient/peter/Organization', 400, /Organization is not a type of the Patient compartment/],
      ['/v1/Encounter/e1/Observation', 400, /only the Patient compartment/],
      ['/v1/Patient/peter/Nope', 404, /Nope is not an R4 resource type/],
      ['/v1/Patient/pe%20ter/Observation', 400, /id must be/],
      ['/v1/Patient/peter/$nope', 400, /no such operation/],
    ] as const) {
      const r = await fhir(p, tcu, 'GET', path);
      assert.equal(r.status, status, `${path} → ${r.text}`);
      assert.match(r.text, message, path);
    }
    const { events } = await p.store.audit.search({ patient: ['Patient/peter'], limit: 100, offset: 0 });
    const queries = events.map((e) => (JSON.parse(e) as { entity?: { description?: string }[] }).entity ?? []);
    assert.ok(
      queries.flat().some((e) => e.description?.startsWith('Patient/peter/Observation?category=laboratory')),
      'the search is audited with its compartment path and the patient as entity',
    );
  });

  test('POST _search with a form gives the same result as GET (J27)', async () => {
    const r = await p.fetch(`${p.fhirBase}/v1/Observation/_search`, {
      method: 'POST',
      dispatcher: p.agent(),
      headers: { authorization: `Bearer ${tcu.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'code=2339-0&subject=Patient/peter',
    });
    const b = (await r.json()) as Bundle;
    assert.deepEqual(
      (b.entry ?? []).map((e) => e.resource.id),
      ['o2'],
    );
  });
});

describe('paging by position (_cursor)', () => {
  const all = ['q1', 'q2', 'q3', 'q4', 'q5', 'q6', 'q7'];
  const page = async (url: string) => {
    const r = await fhir(p, tcu, 'GET', url);
    assert.equal(r.status, 200, `${url} → ${r.text}`);
    const b = r.json as unknown as Bundle;
    const link = (rel: string) => b.link.find((l) => l.relation === rel)?.url;
    return {
      b,
      ids: (b.entry ?? []).map((e) => e.resource.id as string),
      next: link('next'),
      previous: link('previous'),
    };
  };
  const path = (url: string) => url.slice(p.fhirBase.length);

  before(async () => {
    await partition(p, 'pages');
    await grant(p, { partition: 'pages', client: 'search-tcu', scope: 'system/*.cruds' });
    // One at a time: each resource's lastUpdated follows the one before.
    for (const id of all) await put({ resourceType: 'Basic', id, code: { text: 'paging' } }, 'pages');
  });

  test('next links continue after the last match: each page by position, the total on the last page', async () => {
    const seen: string[] = [];
    let url: string | undefined = '/pages/Basic?_count=3';
    let last: Bundle | undefined;
    while (url) {
      const got = await page(url);
      seen.push(...got.ids);
      if (got.next) {
        const q = new URL(got.next).searchParams;
        assert.ok(q.get('_cursor'), `a next link names its position: ${got.next}`);
        assert.equal(q.get('_offset'), null);
        assert.equal(q.get('_count'), '3');
      }
      last = got.b;
      url = got.next && path(got.next);
    }
    assert.deepEqual(seen, all, 'oldest first, each match once');
    assert.equal(last?.total, 7, 'the last page knows the total: the matches before it and its own');
    const third = await page(
      path((await page(path((await page('/pages/Basic?_count=3')).next as string))).next as string),
    );
    assert.deepEqual(third.ids, ['q7']);
    assert.equal(new URL(third.previous as string).searchParams.get('_offset'), '3', 'previous pages by offset');
  });

  test('a match updated between two pages moves to the end; none after it is skipped', async () => {
    const first = await page('/pages/Basic?_count=3');
    assert.deepEqual(first.ids, ['q1', 'q2', 'q3']);
    await put({ resourceType: 'Basic', id: 'q2', code: { text: 'paging, updated' } }, 'pages');
    const rest: string[] = [];
    let url: string | undefined = first.next && path(first.next);
    while (url) {
      const got = await page(url);
      rest.push(...got.ids);
      url = got.next && path(got.next);
    }
    // By offset the second page would start at the fourth match, q5: q4 moved into the first page's place.
    assert.deepEqual(rest, ['q4', 'q5', 'q6', 'q7', 'q2']);
  });

  test('_sort=-_lastUpdated pages newest first by position', async () => {
    const seen: string[] = [];
    let url: string | undefined = '/pages/Basic?_count=2&_sort=-_lastUpdated';
    while (url) {
      const got = await page(url);
      seen.push(...got.ids);
      if (got.next) assert.ok(new URL(got.next).searchParams.get('_cursor'));
      url = got.next && path(got.next);
    }
    assert.deepEqual(seen, ['q2', 'q7', 'q6', 'q5', 'q4', 'q3', 'q1']);
  });

  test('a position deep in a search pages on: no _offset cap, no previous link past it', async () => {
    const { next } = await page('/pages/Basic?_count=3');
    const there = await page(path(next as string));
    assert.equal(there.ids.length, 3);
    const position = JSON.parse(
      Buffer.from(new URL(next as string).searchParams.get('_cursor') as string, 'base64url').toString(),
    );
    position[0] = 250_000;
    const deep = await page(
      `/pages/Basic?_count=3&_cursor=${Buffer.from(JSON.stringify(position)).toString('base64url')}`,
    );
    assert.deepEqual(deep.ids, there.ids, 'the same page as at its real depth');
    assert.equal(deep.previous, undefined, 'a previous page past the _offset cap cannot be named');
    const beyond = await fhir(p, tcu, 'GET', '/pages/Basic?_offset=100001');
    assert.equal(beyond.status, 400, 'refused, not clamped: a clamped offset answers the same page forever');
    assert.match(beyond.text, /_lastUpdated order/);
  });

  test('a position is checked, and only moves within the vault and the order it was made for', async () => {
    const { next } = await page('/pages/Basic?_count=3');
    const cursor = new URL(next as string).searchParams.get('_cursor') as string;
    const forged = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    for (const bad of [
      'not-base64!',
      forged({ a: 1 }),
      forged([-1, '2026-01-01T00:00:00.000Z', 'x']),
      forged([0, "2026-01-01' OR 1=1 --", 'x']),
      forged([0, '2026-01-01T00:00:00.000Z', '../x']),
      'x'.repeat(500),
    ]) {
      const r = await fhir(p, tcu, 'GET', `/pages/Basic?_cursor=${encodeURIComponent(bad)}`);
      assert.equal(r.status, 400, bad);
      assert.equal((r.json as { resourceType: string }).resourceType, 'OperationOutcome');
    }
    const both = await fhir(p, tcu, 'GET', `/pages/Basic?_cursor=${cursor}&_offset=3`);
    assert.equal(both.status, 400);
    const sorted = await fhir(p, tcu, 'GET', `/pages/Basic?_cursor=${cursor}&_sort=_id`);
    assert.equal(sorted.status, 400);
    // Another vault: the position is only a place in (lastUpdated, id) order; nothing of this vault shows.
    const elsewhere = await fhir(p, tcu, 'GET', `/v2/Basic?_cursor=${cursor}`);
    assert.equal(elsewhere.status, 200);
    assert.equal((elsewhere.json as unknown as Bundle).entry, undefined);
  });
});

describe('a condition that matches most of a type (time index walked, or not)', () => {
  // SQLite walks the time index when a condition has ≥ 5,000 matches, over 2,000 resources from the page's
  // start, and falls back to the condition's own index when that did not fill the page (store/sql/search.ts).
  // Here patient b's 2,500 come first, so the first page of a's falls back and the later ones walk.
  type Page = { b: Bundle; next?: string };
  const a: string[] = [];
  const hr: string[] = [];
  const rare: string[] = [];
  const page = async (url: string): Promise<Page> => {
    const r = await fhir(p, tcu, 'GET', url);
    assert.equal(r.status, 200, `${url} → ${r.text}`);
    const b = r.json as unknown as Bundle;
    return { b, next: b.link.find((l) => l.relation === 'next')?.url };
  };
  const walk = async (first: string) => {
    const seen: { id: string; at: number }[] = [];
    let url: string | undefined = first;
    while (url) {
      const got = await page(url);
      for (const e of got.b.entry ?? []) {
        const meta = e.resource.meta as { lastUpdated: string };
        seen.push({ id: e.resource.id as string, at: Date.parse(meta.lastUpdated) });
      }
      url = got.next?.slice(p.fhirBase.length);
    }
    return seen;
  };
  const inOrder = (seen: { id: string; at: number }[], descending: boolean) =>
    seen.every((x, i) => {
      const prev = seen[i - 1];
      if (!prev) return true;
      const cmp = prev.at - x.at || (prev.id < x.id ? -1 : prev.id > x.id ? 1 : 0);
      return descending ? cmp > 0 : cmp < 0;
    });

  before(async () => {
    await partition(p, 'dense');
    await grant(p, { partition: 'dense', client: 'search-tcu', scope: 'system/*.cruds' });
    const dir = mkdtempSync(join(tmpdir(), 'carevault-dense-'));
    const line = (id: string, patient: string, code: string) =>
      JSON.stringify({
        resourceType: 'Observation',
        id,
        status: 'final',
        subject: { reference: `Patient/${patient}` },
        code: { coding: [{ system: 'http://loinc.org', code }] },
      });
    const first = Array.from({ length: 2500 }, (_, i) => line(`b${i}`, 'b', '8867-4'));
    const then = Array.from({ length: 6006 }, (_, i) => {
      const code = i % 1000 === 999 ? 'rare' : i % 2 ? '8867-4' : '29463-7';
      const id = `a${String(i).padStart(5, '0')}`;
      a.push(id);
      if (code === '8867-4') hr.push(id);
      if (code === 'rare') rare.push(id);
      return line(id, 'a', code);
    });
    writeFileSync(join(dir, '1.ndjson'), `${first.join('\n')}\n`);
    writeFileSync(join(dir, '2.ndjson'), `${then.join('\n')}\n`);
    try {
      await importCommand(p.config, [join(dir, '1.ndjson'), join(dir, '2.ndjson')], 'dense');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('all of a dense subject through next links: each once, in (lastUpdated, id) order', async () => {
    const seen = await walk('/dense/Observation?subject=Patient/a&_count=1000');
    assert.deepEqual(seen.map((x) => x.id).sort(), a);
    assert.ok(inOrder(seen, false));
  });

  test('newest first, with a second condition checked on the way', async () => {
    const seen = await walk(
      '/dense/Observation?subject=Patient/a&code=http://loinc.org|8867-4&_count=700&_sort=-_lastUpdated',
    );
    assert.deepEqual(seen.map((x) => x.id).sort(), hr);
    assert.ok(inOrder(seen, true));
  });

  test('a rare second condition, by _offset, and the total', async () => {
    assert.deepEqual(await searchIds('Observation?subject=Patient/a&code=rare', tcu, 'dense'), rare);
    const all = await walk('/dense/Observation?subject=Patient/a&_count=1000');
    const r = await page('/dense/Observation?subject=Patient/a&_count=50&_offset=3000&_total=accurate');
    assert.deepEqual(
      (r.b.entry ?? []).map((e) => e.resource.id),
      all.slice(3000, 3050).map((x) => x.id),
    );
    assert.equal(r.b.total, a.length);
  });
});

describe('vault isolation in search (I16 X11)', () => {
  test('matches, includes, revincludes and totals stay inside the vault', async () => {
    const r = await fhir(
      p,
      tcu,
      'GET',
      '/v1/Observation?_include=Observation:patient&_revinclude=Provenance:target&_total=accurate',
    );
    const b = r.json as unknown as Bundle;
    assert.equal(b.total, 3);
    for (const e of b.entry ?? []) assert.ok(e.fullUrl.startsWith(`${p.fhirBase}/v1/`), e.fullUrl);
    assert.ok(!(b.entry ?? []).some((e) => e.resource.id === 'provx' || e.resource.id === 'x1'));
    assert.deepEqual(await searchIds('Patient?_id=peter', other, 'v2'), ['peter']);
    const v2peter = (await fhir(p, other, 'GET', '/v2/Patient?_id=peter')).json as unknown as Bundle;
    assert.equal(v2peter.entry?.[0]?.resource.birthDate, undefined, "v2's peter is v2's own resource");
    const denied = await fhir(p, other, 'GET', '/v1/Observation?_total=accurate');
    assert.equal(denied.status, 404);
  });

  test('granular scopes filter searches and refuse reads outside them (I11 I12)', async () => {
    const { client_secret } = await p.register('lab-only', {
      auth: 'client_secret_basic',
      scope: `system/Observation.rs?category=${LAB}|laboratory system/Patient.rs`,
    });
    await grant(p, { partition: 'v1', client: 'lab-only', scope: 'system/*.rs' });
    const { tokenWithSecret } = await import('./helpers/fhir.ts');
    const lab = { token: await tokenWithSecret(p, 'lab-only', client_secret as string) };
    assert.deepEqual(await searchIds('Observation?patient=peter', lab), ['o2']);
    assert.deepEqual(await searchIds('Observation', lab), ['o2', 'o3']);
    assert.equal((await fhir(p, lab, 'GET', '/v1/Observation/o2')).status, 200);
    assert.equal((await fhir(p, lab, 'GET', '/v1/Observation/o1')).status, 403);
    const withInclude = await fhir(p, lab, 'GET', '/v1/Patient?_id=peter&_revinclude=Observation:patient');
    assert.ok(
      !((withInclude.json as unknown as Bundle).entry ?? []).some((e) => e.resource.id === 'o1'),
      'includes respect granular scopes',
    );
  });
});

describe('bad search input → 400 OperationOutcome, never a 500 (J40–J42)', () => {
  const cases = [
    'Patient?birthdate=foo',
    'Patient?birthdate=2024-13-01',
    'Patient?family:above=x',
    'Patient?gender:in=x',
    'Observation?value-quantity=abc',
    'Observation?_sort=nonsense',
    'Observation?_count=-1',
    'Observation?_include=Patient:organization',
    'Observation?_include=*',
    'Observation?subject:Medication=1',
    'Observation?code-value-quantity=x',
    "Patient?family=x'%20OR%201=1--",
    'Patient?_has:Nope:patient:code=1',
    'Patient?_summary=maybe',
    'Patient?_summary=true&_elements=gender',
    'Observation?_include=Observation:*:Patient',
    'Patient?_id=bad%20id',
    'Patient?gender:missing=maybe',
  ];
  for (const q of cases) {
    test(q, async () => {
      const r = await fhir(p, tcu, 'GET', `/v1/${q}`);
      if (q.includes('OR%201=1')) {
        assert.equal(r.status, 200, 'injection attempts are just values');
        assert.equal((r.json as unknown as Bundle).entry, undefined);
        return;
      }
      assert.equal(r.status, 400, r.text);
      assert.equal(r.json.resourceType, 'OperationOutcome');
      assert.ok(!/sqlite|SELECT|\n\s+at /i.test(r.text), r.text);
    });
  }
});
