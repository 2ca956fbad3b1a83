import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from 'fhir-kit-client';
import { Agent, setGlobalDispatcher } from 'undici';
import { type Caller, fhir, grantedClient, partition } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// _filter (R4 search_filter.html): comparisons joined by and / or / not, as the ordinary parameters answer them.
let p: TestPlatform;
let writer: Caller;
const LOINC = 'http://loinc.org';
const CS = 'http://example.org/cs/body';
const VS = 'http://example.org/vs/systolic';
type Page = { total?: number; entry?: { resource: { id: string } }[] };

const patient = (id: string, extra: Record<string, unknown>) => ({ resourceType: 'Patient', id, ...extra });
const observation = (id: string, subject: string, code: Record<string, unknown>, extra: Record<string, unknown>) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  subject: { reference: `Patient/${subject}` },
  code,
  ...extra,
});
const loinc = (code: string) => ({ coding: [{ system: LOINC, code }] });
const mmHg = (value: number) => ({
  valueQuantity: { value, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
});

const RECORD = [
  patient('pa', { name: [{ given: ['Peter'], family: 'Pan' }], birthDate: '2014-11-01', gender: 'male' }),
  patient('pb', { name: [{ given: ['Petra'], family: 'Jones' }], birthDate: '2010-05-05', gender: 'female' }),
  patient('pc', { name: [{ given: ['Anna'], family: 'Peterson' }], birthDate: '2015-01-01', gender: 'female' }),
  patient('pd', { gender: 'unknown' }),
  patient('pe', { name: [{ family: "O'Neil, Jr" }], birthDate: '1950' }),
  observation('o1', 'pa', loinc('8480-6'), { ...mmHg(131), effectiveDateTime: '2024-03-01' }),
  observation('o2', 'pb', loinc('8480-6'), {
    ...mmHg(120),
    status: 'preliminary',
    effectivePeriod: { start: '2024-02-20', end: '2024-03-05' },
  }),
  observation('o3', 'pc', loinc('8462-4'), { ...mmHg(80), effectiveDateTime: '2023-06-01' }),
  observation('o4', 'pa', { text: 'note' }, { status: 'amended' }),
  observation('o5', 'pc', { coding: [{ system: CS, code: 'grandchild' }] }, { effectiveDateTime: '2022' }),
  observation('o6', 'pc', { coding: [{ system: CS, code: 'child' }] }, { effectiveDateTime: '2022' }),
  {
    resourceType: 'CodeSystem',
    id: 'body',
    url: CS,
    status: 'active',
    content: 'complete',
    concept: [{ code: 'root', concept: [{ code: 'child', concept: [{ code: 'grandchild' }] }] }],
  },
  {
    resourceType: 'ValueSet',
    id: 'systolic',
    url: VS,
    status: 'active',
    compose: { include: [{ system: LOINC, concept: [{ code: '8480-6' }] }] },
  },
];

async function search(type: string, filter: string, more = '', headers: Record<string, string> = {}, vault = 'flt') {
  return fhir(p, writer, 'GET', `/${vault}/${type}?_filter=${encodeURIComponent(filter)}${more}`, undefined, headers);
}
async function ids(type: string, filter: string, more = ''): Promise<string[]> {
  const r = await search(type, filter, more);
  assert.equal(r.status, 200, `${filter}: ${r.text}`);
  return ((r.json as unknown as Page).entry ?? []).map((e) => e.resource.id).sort();
}
/** The ids an ordinary search finds: what the same question through _filter must find. */
async function ordinary(query: string): Promise<string[]> {
  const r = await fhir(p, writer, 'GET', `/flt/${query}`);
  assert.equal(r.status, 200, `${query}: ${r.text}`);
  return ((r.json as unknown as Page).entry ?? []).map((e) => e.resource.id).sort();
}
async function refused(type: string, filter: string, reason: RegExp, headers: Record<string, string> = {}) {
  const r = await search(type, filter, '', headers);
  assert.equal(r.status, 400, `${filter}: ${r.text}`);
  const issue = (r.json as { issue: { diagnostics: string }[] }).issue[0]?.diagnostics ?? '';
  assert.match(issue, reason, filter);
}

before(async () => {
  p = await startPlatform();
  await partition(p, 'flt');
  await partition(p, 'flt_other');
  writer = await grantedClient(p, 'flt-writer', 'system/*.cruds', ['flt', 'flt_other']);
  for (const r of RECORD) {
    const put = await fhir(p, writer, 'PUT', `/flt/${r.resourceType}/${r.id}`, r);
    assert.equal(put.status, 201, put.text);
  }
  const elsewhere = patient('elsewhere', { name: [{ given: ['Peter'], family: 'Pan' }], birthDate: '2014-11-01' });
  assert.equal((await fhir(p, writer, 'PUT', '/flt_other/Patient/elsewhere', elsewhere)).status, 201);
  setGlobalDispatcher(new Agent({ connect: { ca: p.ca } }));
});
after(() => p.stop());

describe('_filter', () => {
  test("the specification's examples", async () => {
    assert.deepEqual(await ids('Patient', 'name co "pet"'), ['pa', 'pb', 'pc']);
    // eq on a string ignores case and accents, as "a given name of peter" means.
    assert.deepEqual(await ids('Patient', 'given eq "peter" and birthdate ge 2014-10-10'), ['pa']);
    assert.deepEqual(await ids('Observation', `code eq ${LOINC}|8480-6`), ['o1', 'o2']);
    assert.deepEqual(await ids('Observation', 'subject.name co "petr"'), ['o2']);
  });

  test('each comparison finds what the ordinary parameter it amounts to finds', async () => {
    const pairs: [string, string, string][] = [
      ['Patient', 'name sw "pet"', 'Patient?name=pet'],
      ['Patient', 'name co "ete"', 'Patient?name:contains=ete'],
      ['Patient', 'gender eq female', 'Patient?gender=female'],
      ['Patient', 'birthdate lt 2014', 'Patient?birthdate=lt2014'],
      ['Patient', 'birthdate pr false', 'Patient?birthdate:missing=true'],
      ['Observation', 'value-quantity gt 125', 'Observation?value-quantity=gt125'],
      [
        'Observation',
        'value-quantity ge "120|http://unitsofmeasure.org|mm[Hg]"',
        'Observation?value-quantity=ge120|http://unitsofmeasure.org|mm[Hg]',
      ],
      ['Observation', 'date eq 2024-03', 'Observation?date=eq2024-03'],
      ['Observation', 'date sa 2023-12-31', 'Observation?date=sa2023-12-31'],
      ['Observation', 'subject re Patient/pc', 'Observation?subject=Patient/pc'],
      ['Observation', 'subject:Patient eq pa', 'Observation?subject:Patient=pa'],
      ['Observation', 'code in http://example.org/vs/systolic', 'Observation?code:in=http://example.org/vs/systolic'],
      ['Observation', `code ss ${CS}|child`, `Observation?code:below=${CS}|child`],
      ['Observation', `code sb ${CS}|child`, `Observation?code:above=${CS}|child`],
      [
        'Patient',
        '_has:Observation:subject:code eq http://loinc.org|8462-4',
        'Patient?_has:Observation:subject:code=http://loinc.org|8462-4',
      ],
      ['Observation', '_id eq o3', 'Observation?_id=o3'],
    ];
    for (const [type, filter, query] of pairs) {
      const expected = await ordinary(query);
      assert.ok(expected.length > 0, `${query} finds something`);
      assert.deepEqual(await ids(type, filter), expected, filter);
    }
    assert.deepEqual(await ids('Observation', `code ss ${CS}|child`), ['o5', 'o6']);
    assert.deepEqual(await ids('Observation', `code sb ${CS}|child`), ['o6']);
  });

  test('and, or, not and parentheses', async () => {
    assert.deepEqual(await ids('Observation', 'status eq final or status eq amended'), ['o1', 'o3', 'o4', 'o5', 'o6']);
    assert.deepEqual(await ids('Observation', 'not (status eq final)'), ['o2', 'o4']);
    assert.deepEqual(await ids('Observation', '(status eq final or status eq preliminary) and value-quantity gt 100'), [
      'o1',
      'o2',
    ]);
    assert.deepEqual(await ids('Observation', 'status eq final and (value-quantity gt 125 or value-quantity lt 100)'), [
      'o1',
      'o3',
    ]);
    assert.deepEqual(
      await ids('Observation', 'not (code in http://example.org/vs/systolic or value-quantity pr false)'),
      ['o3'],
    );
    // Keywords in any case, a not over a not, spaces around parentheses.
    assert.deepEqual(await ids('Patient', 'NOT(not ( gender eq male ) ) AND name pr true'), ['pa']);
    // Two _filter parameters, and a _filter beside an ordinary parameter: all must hold.
    assert.deepEqual(
      await ids('Patient', 'name co "pet"', `&_filter=${encodeURIComponent('gender eq female')}&birthdate=ge2012`),
      ['pc'],
    );
  });

  test('ne, ni and no value: ne on a date is a value outside it, on a token no value equal', async () => {
    // Prefix semantics on dates (search.html#prefix): pe's 1950 is outside 2014-11-01, pd has no birthDate.
    assert.deepEqual(await ids('Patient', 'birthdate ne 2014-11-01'), ['pb', 'pc', 'pe']);
    assert.deepEqual(await ids('Patient', 'gender ne female'), ['pa', 'pd', 'pe']);
    assert.deepEqual(await ids('Patient', 'family ne "pan"'), ['pb', 'pc', 'pd', 'pe']);
    assert.deepEqual(await ids('Observation', 'code ni http://example.org/vs/systolic'), ['o3', 'o4', 'o5', 'o6']);
    assert.deepEqual(await ids('Observation', '_id ne o1 and subject eq Patient/pa'), ['o4']);
  });

  test('what the ordinary syntax cannot ask: po, eq ignoring case, ew', async () => {
    // o1 is 2024-03-01; o2 runs 2024-02-20 to 03-05: contained in March is o1 only, overlapping March both.
    assert.deepEqual(await ids('Observation', 'date eq 2024-03'), ['o1']);
    assert.deepEqual(await ids('Observation', 'date po 2024-03'), ['o1', 'o2']);
    assert.deepEqual(await ids('Observation', 'date po 2024-02-25'), ['o2']);
    assert.deepEqual(await ids('Observation', 'date po 2024-03-06'), []);
    assert.deepEqual(await ids('Patient', 'family eq "PAN"'), ['pa']);
    assert.deepEqual(await ids('Patient', 'family eq "pa"'), []);
    assert.deepEqual(await ids('Patient', 'family ew "SON"'), ['pc']);
    assert.deepEqual(await ids('Observation', 'subject.family ew "es"'), ['o2']);
  });

  test('a quoted value is one value: commas, pipes, quotes, parentheses and spaces are its own', async () => {
    assert.deepEqual(await ids('Patient', `family eq "O'Neil, Jr"`), ['pe']);
    assert.deepEqual(await ids('Patient', 'family eq "O\'Neil"'), []);
    assert.deepEqual(await ids('Patient', 'name co "l, j" or name co "n) a"'), ['pe']);
    assert.deepEqual(await ids('Patient', 'name co "\\u0050et\\"" or family eq "x|y"'), []);
    assert.deepEqual(await ids('Patient', '(family eq Pan)'), ['pa']);
  });

  test('this vault only, also under not; counts and totals agree', async () => {
    assert.deepEqual(await ids('Patient', 'not (name co "zzz")'), ['pa', 'pb', 'pc', 'pd', 'pe']);
    const other = await search('Patient', 'not (gender eq female)', '', {}, 'flt_other');
    assert.deepEqual(
      ((other.json as unknown as Page).entry ?? []).map((e) => e.resource.id),
      ['elsewhere'],
    );
    const counted = await search('Patient', 'not (gender eq female)', '&_summary=count');
    assert.equal((counted.json as unknown as Page).total, 3);
    const total = await search('Patient', 'name co "pet"', '&_total=accurate&_count=1');
    assert.equal((total.json as unknown as Page).total, 3);
    assert.equal((total.json as unknown as Page).entry?.length, 1);
    // A search of all types takes _filter on parameters every named type has.
    const all = await fhir(
      p,
      writer,
      'GET',
      `/flt?_type=Patient,Observation&_filter=${encodeURIComponent('_id eq pa or _id eq o1')}`,
    );
    assert.deepEqual(
      ((all.json as unknown as Page).entry ?? []).map((e) => e.resource.id),
      ['pa', 'o1'],
    );
    const lacking = await fhir(
      p,
      writer,
      'GET',
      `/flt?_type=Patient,Observation&_filter=${encodeURIComponent('gender eq male')}`,
    );
    assert.equal(lacking.status, 400);
  });

  test('refused with 400 and the reason: syntax, unknown parameters (also when lenient), operators the type lacks', async () => {
    const lenient = { prefer: 'handling=lenient' };
    await refused('Patient', 'nickname eq x', /_filter: .*unknown search parameter nickname for Patient/);
    await refused('Patient', 'nickname eq x or gender eq male', /unknown search parameter nickname/, lenient);
    await refused('Patient', 'gender co mal', /co does not apply to gender \(a token parameter\)/);
    await refused('Patient', 'birthdate co 2014', /co does not apply to birthdate \(a date parameter\)/);
    await refused('Patient', 'name gt "a"', /gt does not apply to name \(a string parameter\)/);
    await refused('Observation', 'value-quantity po 5', /po does not apply/);
    await refused('Patient', '_id pr true', /pr does not apply to _id/);
    await refused('Patient', 'name pr maybe', /pr takes true or false/);
    await refused(
      'Patient',
      'gender eq male and name pr true or birthdate pr true',
      /"and" and "or" mixed without parentheses/,
    );
    await refused('Patient', 'gender is male', /"is" is not an operator/);
    await refused('Patient', 'gender eq', /expected a space and a value after eq/);
    await refused('Patient', 'name eq "open', /a string without its closing quote/);
    await refused('Patient', 'name eq "bad \\x"', /not a valid JSON string/);
    await refused('Patient', '(gender eq male', /expected "\)"/);
    // A value with ] or ) is quoted (the grammar's token ends there).
    await refused('Observation', 'value-quantity ge 120|http://unitsofmeasure.org|mm[Hg]', /unexpected "\]"/);
    await refused('Patient', 'gender eq male)', /unexpected "\)"/);
    await refused('Patient', '   ', /empty expression/);
    await refused('Observation', 'related[type eq has-component].target pr true', /\[filter\] on a parameter path/);
    await refused('Patient', 'birthdate eq yesterday', /_filter: birthdate: .*not a FHIR date/);
    await refused(
      'Observation',
      'subject:Group.name eq x',
      /subject:Group.name: no target of subject has a parameter name/,
    );
    await refused('Observation', 'subject:Basic.name eq x', /subject of Observation cannot refer to Basic/);
    await refused('Observation', 'status.name eq x', /status of Observation is not a reference parameter/);
    await refused('Patient', `${'('.repeat(40)}gender eq male${')'.repeat(40)}`, /parentheses nest more than 16 deep/);
    await refused(
      'Patient',
      Array.from({ length: 101 }, () => 'gender eq male').join(' or '),
      /more than 100 comparisons/,
    );
    const modifier = await fhir(p, writer, 'GET', '/flt/Patient?_filter:exact=gender%20eq%20male');
    assert.equal(modifier.status, 400);
  });

  test('POST _search, the self link, the CapabilityStatement and fhir-kit-client', async () => {
    const form = new URLSearchParams({ _filter: 'name co "pet" and gender eq female' }).toString();
    const r = await p.fetch(`${p.fhirBase}/flt/Patient/_search`, {
      method: 'POST',
      dispatcher: p.agent(),
      headers: { authorization: `Bearer ${writer.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: form,
    });
    const page = (await r.json()) as Page & { link: { relation: string; url: string }[] };
    assert.equal(r.status, 200);
    assert.deepEqual((page.entry ?? []).map((e) => e.resource.id).sort(), ['pb', 'pc']);
    const self = new URL(page.link.find((l) => l.relation === 'self')?.url ?? '');
    assert.equal(self.searchParams.get('_filter'), 'name co "pet" and gender eq female');

    const meta = await fhir(p, writer, 'GET', '/flt/metadata');
    const patientRest = (
      meta.json as { rest: { resource: { type: string; searchParam: { name: string; type: string }[] }[] }[] }
    ).rest[0]?.resource.find((x) => x.type === 'Patient');
    assert.ok(patientRest?.searchParam.some((s) => s.name === '_filter' && s.type === 'special'));

    const client = new Client({ baseUrl: `${p.fhirBase}/flt`, bearerToken: writer.token });
    const bundle = (await client.search({
      resourceType: 'Observation',
      searchParams: { _filter: `code eq ${LOINC}|8480-6 and value-quantity gt 125` },
    })) as Page;
    assert.deepEqual(
      (bundle.entry ?? []).map((e) => e.resource.id),
      ['o1'],
    );
  });
});
