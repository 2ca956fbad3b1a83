import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Caller, fhir, grant, grantedClient, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// `:in` and `:not-in` (search.html#modifiers) against ValueSets stored in the same vault.
let p: TestPlatform;
let writer: Caller;
const LOINC = 'http://loinc.org';
const VS = 'http://example.org/fhir/ValueSet';

const observation = (id: string, code: string, patient: string, system = LOINC) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { coding: [{ system, code }] },
  subject: { reference: `Patient/${patient}` },
});
const DISPLAY: Record<string, string> = { '8867-4': 'Heart rate', '8480-6': 'Systolic blood pressure' };
const concepts = (...codes: string[]) => [
  { system: LOINC, concept: codes.map((code) => (DISPLAY[code] ? { code, display: DISPLAY[code] } : { code })) },
];

async function put(resource: Record<string, unknown>, vault = 'vs') {
  const r = await fhir(p, writer, 'PUT', `/${vault}/${resource.resourceType}/${resource.id}`, resource);
  assert.ok(r.status === 200 || r.status === 201, r.text);
}

async function ids(query: string, caller = writer): Promise<string[]> {
  const r = await fhir(p, caller, 'GET', `/vs/${query}`);
  assert.equal(r.status, 200, `${query} → ${r.text}`);
  const entries = (r.json as { entry?: { resource: { id: string }; search: { mode: string } }[] }).entry ?? [];
  return entries
    .filter((e) => e.search.mode === 'match')
    .map((e) => e.resource.id)
    .sort();
}

async function refused(query: string, status: number, message: RegExp, caller = writer) {
  const r = await fhir(p, caller, 'GET', `/vs/${query}`);
  assert.equal(r.status, status, `${query} → ${r.text}`);
  assert.match(r.text, message, query);
}

before(async () => {
  p = await startPlatform();
  await partition(p, 'vs');
  await partition(p, 'elsewhere');
  writer = await grantedClient(p, 'vs-writer', 'system/*.cruds', ['vs', 'elsewhere']);
  const valueSet = (id: string, url: string, more: Record<string, unknown>) => ({
    resourceType: 'ValueSet',
    id,
    url,
    status: 'active',
    ...more,
  });
  for (const vs of [
    valueSet('vitals-1', `${VS}/vitals`, { version: '1', compose: { include: concepts('8867-4', '8480-6') } }),
    valueSet('vitals-2', `${VS}/vitals`, { version: '2', compose: { include: concepts('8867-4') } }),
    // An expansion is taken as it is; its compose is not looked at.
    valueSet('expanded', `${VS}/expanded`, {
      compose: { include: concepts('8867-4') },
      expansion: {
        timestamp: '2026-12-01T00:00:00Z',
        contains: [
          { system: LOINC, code: '8310-5' },
          { abstract: true, display: 'Respiration', contains: [{ system: LOINC, code: '9279-1' }] },
        ],
      },
    }),
    // The heart rate alone: the vitals, less what its exclude names.
    valueSet('imports', `${VS}/imports`, {
      compose: { include: [{ valueSet: [`${VS}/vitals|1`] }], exclude: concepts('8480-6') },
    }),
    valueSet('filtered', `${VS}/filtered`, {
      compose: { include: [{ system: LOINC, filter: [{ property: 'CLASS', op: '=', value: 'VITALS' }] }] },
    }),
    valueSet('whole', `${VS}/whole`, { compose: { include: [{ system: LOINC }] } }),
    valueSet('huge', `${VS}/huge`, {
      compose: { include: concepts(...Array.from({ length: 1001 }, (_, i) => `x-${i}`)) },
    }),
    valueSet('half-a', `${VS}/half-a`, {
      compose: { include: concepts(...Array.from({ length: 600 }, (_, i) => `a-${i}`)) },
    }),
    valueSet('half-b', `${VS}/half-b`, {
      compose: { include: concepts(...Array.from({ length: 600 }, (_, i) => `b-${i}`)) },
    }),
    // Hostile shapes: one that imports itself, one that imports the same ValueSet 60 times.
    valueSet('loop', `${VS}/loop`, { compose: { include: [{ valueSet: [`${VS}/loop`] }] } }),
    valueSet('fan', `${VS}/fan`, {
      compose: { include: Array.from({ length: 60 }, () => ({ valueSet: [`${VS}/vitals|1`] })) },
    }),
    valueSet('empty', `${VS}/empty`, { compose: { include: concepts('8867-4'), exclude: concepts('8867-4') } }),
  ]) {
    await put(vs);
  }
  await put({ resourceType: 'ValueSet', id: 'only-there', url: `${VS}/only-there`, status: 'active' }, 'elsewhere');
  for (const id of ['pa', 'pb']) await put({ resourceType: 'Patient', id });
  await put(observation('hr', '8867-4', 'pb'));
  await put(observation('sys', '8480-6', 'pb'));
  await put(observation('temp', '8310-5', 'pa'));
  await put(observation('resp', '9279-1', 'pa'));
  await put(observation('other', '8867-4', 'pa', 'http://example.org/not-loinc'));
});
after(() => p.stop());

describe(':in and :not-in', () => {
  test('match the codes of a ValueSet named by url|version, by ValueSet/[id] or by its absolute URL', async () => {
    const vitals = ['hr', 'sys'];
    assert.deepEqual(await ids(`Observation?code:in=${VS}/vitals|1`), vitals);
    assert.deepEqual(await ids('Observation?code:in=ValueSet/vitals-1'), vitals);
    assert.deepEqual(await ids(`Observation?code:in=${p.fhirBase}/vs/ValueSet/vitals-1`), vitals);
    assert.deepEqual(await ids(`Observation?code:in=${VS}/vitals|2`), ['hr']);
    // The system counts: a code of the same value in another system is not in the ValueSet.
    assert.deepEqual(await ids(`Observation?code:in=${VS}/imports`), ['hr']);
    assert.deepEqual(await ids(`Observation?code:in=${VS}/expanded`), ['resp', 'temp']);
    assert.deepEqual(await ids(`Observation?code:in=${VS}/vitals|1,${VS}/expanded`), ['hr', 'resp', 'sys', 'temp']);
    assert.deepEqual(await ids(`Observation?code:not-in=${VS}/vitals|1`), ['other', 'resp', 'temp']);
    assert.deepEqual(await ids(`Observation?code:in=${VS}/vitals|1&subject=Patient/pb&_count=1&_total=accurate`), [
      'hr',
    ]);
  });

  test('work inside _has and chains', async () => {
    assert.deepEqual(await ids(`Patient?_has:Observation:subject:code:in=${VS}/expanded`), ['pa']);
    assert.deepEqual(await ids(`Patient?_has:Observation:subject:code:in=${VS}/vitals|1`), ['pb']);
  });

  test('what cannot be expanded here is a 400 that says why', async () => {
    await refused(
      `Observation?code:in=${VS}/vitals`,
      400,
      /several ValueSet resources are .*: name one as url\|version/,
    );
    await refused(
      `Observation?code:in=${VS}/filtered`,
      400,
      /filters http:\/\/loinc.org, which this vault has no CodeSystem of: that needs a terminology server/,
    );
    await refused(`Observation?code:in=${VS}/whole`, 400, /includes all of http:\/\/loinc.org/);
    await refused(`Observation?code:in=${VS}/huge`, 400, /ValueSet .*\/huge has more than 1000 codes/);
    // Each below the limit, together above it.
    await refused(`Observation?code:in=${VS}/half-a,${VS}/half-b`, 400, /take up to 1000 codes in one search/);
    await refused(`Observation?code:in=${VS}/empty`, 400, /has no codes/);
    await refused(`Observation?code:in=${VS}/loop`, 400, /imports nest more than 3 deep/);
    await refused(`Observation?code:in=${VS}/fan`, 400, /reads up to 50 ValueSets and CodeSystems, imports included/);
    await refused(`Observation?code:in=${VS}/nowhere`, 400, /no ValueSet .*nowhere in this vault/);
    await refused('Observation?code:in=Patient/pa', 400, /is not a ValueSet/);
    // A ValueSet of another vault is not found from this one.
    await refused(`Observation?code:in=${VS}/only-there`, 400, /no ValueSet .* in this vault/);
  });

  test('the caller must be allowed to read ValueSets; conditions do not take them', async () => {
    const observationsOnly = await secretClient(p, 'vs-obs-only', 'system/Observation.rs');
    await grant(p, { partition: 'vs', client: 'vs-obs-only', scope: 'system/Observation.rs' });
    await refused(`Observation?code:in=${VS}/vitals|1`, 403, /ValueSet/, observationsOnly);
    assert.deepEqual(await ids('Observation?code=8310-5', observationsOnly), ['temp']);

    const conditional = await fhir(p, writer, 'POST', '/vs/Observation', observation('new', '8867-4', 'pa'), {
      'if-none-exist': `code:in=${VS}/vitals|1`,
    });
    assert.equal(conditional.status, 400, conditional.text);
    assert.match(conditional.text, /answered in a search only/);
    // An unknown parameter with the modifier is ignored, as unknown parameters are, and looks nothing up.
    assert.deepEqual(await ids(`Observation?bogus:in=${VS}/nowhere&code=8310-5`), ['temp']);
  });
});

describe('ValueSet $expand', () => {
  type Expanded = {
    resourceType: string;
    id: string;
    url: string;
    compose?: unknown;
    expansion: { total: number; offset: number; contains?: { system: string; code: string; display?: string }[] };
  };
  const expand = async (path: string, caller = writer) => {
    const r = await fhir(p, caller, 'GET', `/vs/${path}`);
    return { status: r.status, text: r.text, vs: r.json as unknown as Expanded };
  };
  const codes = (vs: Expanded) => (vs.expansion.contains ?? []).map((c) => c.code);

  test('by url, url and valueSetVersion, or on the instance: the codes with their displays', async () => {
    const byUrl = await expand(`ValueSet/$expand?url=${VS}/vitals&valueSetVersion=1`);
    assert.equal(byUrl.status, 200, byUrl.text);
    assert.equal(byUrl.vs.resourceType, 'ValueSet');
    assert.equal(byUrl.vs.id, 'vitals-1');
    assert.deepEqual(byUrl.vs.expansion.contains, [
      { system: LOINC, code: '8867-4', display: 'Heart rate' },
      { system: LOINC, code: '8480-6', display: 'Systolic blood pressure' },
    ]);
    assert.equal(byUrl.vs.expansion.total, 2);
    assert.deepEqual(codes((await expand(`ValueSet/$expand?url=${encodeURIComponent(`${VS}/vitals|2`)}`)).vs), [
      '8867-4',
    ]);
    assert.deepEqual(codes((await expand('ValueSet/imports/$expand')).vs), ['8867-4']);
    // A stored expansion is answered as it is, its abstract grouping left out.
    assert.deepEqual(codes((await expand('ValueSet/expanded/$expand')).vs), ['8310-5', '9279-1']);
    const post = await fhir(p, writer, 'POST', '/vs/ValueSet/$expand', {
      resourceType: 'Parameters',
      parameter: [
        { name: 'url', valueUri: `${VS}/vitals` },
        { name: 'valueSetVersion', valueString: '1' },
        { name: 'count', valueInteger: 1 },
      ],
    });
    assert.equal(post.status, 200, post.text);
    assert.deepEqual(codes(post.json as unknown as Expanded), ['8867-4']);
  });

  test('filter, offset and count; what cannot be expanded is 400, another vault 404, no ValueSet read 403', async () => {
    const filtered = await expand('ValueSet/vitals-1/$expand?filter=SYSTOLIC');
    assert.deepEqual(codes(filtered.vs), ['8480-6']);
    assert.equal(filtered.vs.expansion.total, 1);
    const second = await expand('ValueSet/vitals-1/$expand?offset=1&count=5');
    assert.deepEqual(codes(second.vs), ['8480-6']);
    assert.equal(second.vs.expansion.total, 2);
    const none = await expand('ValueSet/vitals-1/$expand?count=0');
    assert.equal(none.vs.expansion.contains, undefined);
    assert.equal(none.vs.expansion.total, 2);
    for (const [path, status, message] of [
      [`ValueSet/$expand?url=${VS}/filtered`, 400, /filters http:\/\/loinc.org, which this vault has no CodeSystem/],
      [`ValueSet/$expand?url=${VS}/vitals`, 400, /several ValueSet resources/],
      ['ValueSet/$expand', 400, /give the ValueSet to expand/],
      [`ValueSet/vitals-1/$expand?url=${VS}/vitals`, 400, /takes no url/],
      ['ValueSet/vitals-1/$expand?count=lots', 400, /count must be a whole number/],
      ['ValueSet/vitals-1/$expand?displayLanguage=nl', 400, /not displayLanguage/],
      ['ValueSet/nowhere/$expand', 400, /no ValueSet ValueSet\/nowhere in this vault/],
      // Not cut short to a wrong total.
      ['ValueSet/huge/$expand', 400, /has more than 1000 codes/],
    ] as const) {
      const r = await expand(path);
      assert.equal(r.status, status, `${path}: ${r.text}`);
      assert.match(r.text, message, path);
    }
    const elsewhere = await fhir(p, writer, 'GET', `/other-vault/ValueSet/vitals-1/$expand`);
    assert.equal(elsewhere.status, 404, elsewhere.text);
    const observationsOnly = await secretClient(p, 'vs-expand-obs', 'system/Observation.rs');
    await grant(p, { partition: 'vs', client: 'vs-expand-obs', scope: 'system/Observation.rs' });
    assert.equal((await expand('ValueSet/vitals-1/$expand', observationsOnly)).status, 403);
  });
});
