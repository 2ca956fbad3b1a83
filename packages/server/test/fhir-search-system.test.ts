import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { FhirClient } from '@carevault/sdk';
import { Client } from 'fhir-kit-client';
import { Agent, setGlobalDispatcher } from 'undici';
import { auditEvents, type Caller, fhir, grant, grantedClient, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// Search of all types (R4 search.html#all): GET [base]?… in one vault, by type in turn, paged by position.
let p: TestPlatform;
let writer: Caller;
let auditor: Caller;
const TAG = 'http://example.org/tags';
type Page = { total?: number; link?: { relation: string; url: string }[]; entry?: { resource: R }[] };
type R = { resourceType: string; id: string };
const key = (r: R) => `${r.resourceType}/${r.id}`;
const tagged = { meta: { tag: [{ system: TAG, code: 'shared' }] } };

const RECORD = [
  { resourceType: 'Patient', id: 'p1' },
  { resourceType: 'Patient', id: 'p2', ...tagged },
  {
    resourceType: 'Observation',
    id: 'o1',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    ...tagged,
  },
  { resourceType: 'Observation', id: 'o2', status: 'final', code: { text: 'other' } },
  {
    resourceType: 'Condition',
    id: 'c1',
    subject: { reference: 'Patient/p1' },
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    ...tagged,
  },
];

async function search(query: string, caller = writer, vault = 'sys') {
  return fhir(p, caller, 'GET', `/${vault}?${query}`);
}
async function keys(query: string, caller = writer): Promise<string[]> {
  const r = await search(query, caller);
  assert.equal(r.status, 200, `${query}: ${r.text}`);
  return ((r.json as unknown as Page).entry ?? []).map((e) => key(e.resource));
}

before(async () => {
  p = await startPlatform();
  await partition(p, 'sys');
  await partition(p, 'sys_other');
  writer = await grantedClient(p, 'sys-writer', 'system/*.cruds', ['sys', 'sys_other']);
  auditor = await secretClient(p, 'sys-auditor', 'system/AuditEvent.rs');
  for (const r of RECORD) {
    const put = await fhir(p, writer, 'PUT', `/sys/${r.resourceType}/${r.id}`, r);
    assert.equal(put.status, 201, put.text);
  }
  await fhir(p, writer, 'PUT', '/sys_other/Patient/elsewhere', { resourceType: 'Patient', id: 'elsewhere', ...tagged });
  setGlobalDispatcher(new Agent({ connect: { ca: p.ca } }));
});
after(() => p.stop());

describe('search of all types', () => {
  test('parameters every type has: the matches of each type, types in order, this vault only', async () => {
    assert.deepEqual(await keys(`_tag=${TAG}|shared`), ['Condition/c1', 'Observation/o1', 'Patient/p2']);
    assert.deepEqual(await keys(`_tag=${TAG}|shared&_type=Patient,Observation`), ['Patient/p2', 'Observation/o1']);
    assert.deepEqual(await keys('_id=o1,p1,elsewhere'), ['Observation/o1', 'Patient/p1']);
    const counted = await search(`_tag=${TAG}|shared&_summary=count`);
    assert.equal((counted.json as unknown as Page).total, 3);
    assert.equal((counted.json as unknown as Page).entry, undefined);
  });

  test('a parameter the named types share; one some type lacks is 400, also when lenient', async () => {
    const code = 'code=http://loinc.org|8867-4';
    assert.deepEqual(await keys(`_type=Observation,Condition&${code}`), ['Observation/o1', 'Condition/c1']);
    for (const [query, reason] of [
      [`_type=Observation,Patient&${code}`, /code is not a search parameter of Patient/],
      [code, /code is not a search parameter of \w+: name in _type only types that have it/],
      ['_type=Patient&_sort=_lastUpdated', /_sort: sort by one type/],
      ['_type=Patient&_include=Patient:organization', /_include: name includes in a search of one type/],
      ['_offset=10', /pages by its next links/],
      ['_type=Nothing', /_type: Nothing is not an R4 resource type/],
      ['_cursor=garbage', /cursor/],
    ] as const) {
      const r = await search(query);
      assert.equal(r.status, 400, `${query}: ${r.text}`);
      assert.match(r.text, reason, query);
    }
    // Names of JavaScript's own properties are parameters like any other unknown one: passed over when lenient.
    for (const name of ['constructor', '__proto__', 'toString'])
      assert.equal((await search(`${name}=x`)).status, 200, name);
  });

  test('pages by their next links bring every match once; _total=accurate counts them all', async () => {
    const seen: string[] = [];
    let url: string | undefined = `${p.fhirBase}/sys?_type=Patient,Observation,Condition&_count=2&_total=accurate`;
    let first = true;
    while (url) {
      const r = await fhir(p, writer, 'GET', url.slice(p.fhirBase.length));
      assert.equal(r.status, 200, r.text);
      const page = r.json as unknown as Page;
      if (first) assert.equal(page.total, 5);
      first = false;
      assert.ok((page.entry?.length ?? 0) <= 2);
      seen.push(...(page.entry ?? []).map((e) => key(e.resource)));
      url = page.link?.find((l) => l.relation === 'next')?.url;
      assert.ok(seen.length <= 10, 'the next links do not end');
    }
    assert.deepEqual(seen, ['Patient/p1', 'Patient/p2', 'Observation/o1', 'Observation/o2', 'Condition/c1']);
  });

  test('by fhir-kit-client and by the SDK, GET and POST _search', async () => {
    const kit = new Client({ baseUrl: `${p.fhirBase}/sys`, bearerToken: writer.token });
    const found = (await kit.search({ searchParams: { _tag: `${TAG}|shared`, _type: 'Patient' } })) as unknown as Page;
    assert.deepEqual(
      found.entry?.map((e) => key(e.resource)),
      ['Patient/p2'],
    );
    const posted = (await kit.search({
      searchParams: { _id: 'o2' },
      options: { postSearch: true },
    })) as unknown as Page;
    assert.deepEqual(
      posted.entry?.map((e) => key(e.resource)),
      ['Observation/o2'],
    );
    const sdk = new FhirClient({ baseUrl: `${p.fhirBase}/sys`, tokens: { getToken: async () => writer.token } });
    const page = await sdk.search(undefined, { _id: 'c1' });
    assert.deepEqual(
      page.entry?.map((e) => `${e.resource?.resourceType}/${e.resource?.id}`),
      ['Condition/c1'],
    );
  });

  test("the caller's types only: unnamed ones are left out, a named one it may not search is 403", async () => {
    const patients = await grantedClient(p, 'sys-patients', 'system/Patient.rs', ['sys']);
    assert.deepEqual(await keys(`_tag=${TAG}|shared`, patients), ['Patient/p2']);
    assert.equal((await search('_type=Observation', patients)).status, 403);
    // A granular scope narrows its type as in a search of one type.
    const heart = await secretClient(p, 'sys-heart', 'system/Observation.rs?code=http://loinc.org|8867-4');
    await grant(p, { partition: 'sys', client: 'sys-heart', scope: 'system/Observation.rs' });
    assert.deepEqual(await keys('_type=Observation', heart), ['Observation/o1']);
    const stranger = await secretClient(p, 'sys-stranger', 'system/*.rs');
    assert.equal((await search('_id=p1', stranger)).status, 404);
  });

  test('the CapabilityStatement lists search-system', async () => {
    const r = await fhir(p, undefined, 'GET', '/sys/metadata');
    const rest = (r.json as { rest: { interaction: { code: string }[] }[] }).rest[0];
    assert.ok(rest?.interaction.some((i) => i.code === 'search-system'));
  });

  test('audited as search-system with the query', async () => {
    await keys('_id=p2&_type=Patient');
    type Event = { entity?: { query?: string; what?: { reference?: string } }[] };
    const events = await auditEvents<Event>(p, auditor, 'subtype=search-system&_count=100');
    const queries = events.flatMap((e) => e.entity ?? []).flatMap((x) => (x.query ? [x.query] : []));
    assert.ok(
      queries.map((q) => Buffer.from(q, 'base64').toString()).includes('?_id=p2&_type=Patient'),
      queries.join(),
    );
  });
});
