import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Bundle } from 'fhir/r4.js';
import { Client } from 'fhir-kit-client';
import { Agent, setGlobalDispatcher } from 'undici';
import { importCommand } from '../src/admin/import.ts';
import { auditEvents, type Caller, fhir, grantedClient, mtlsClient, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// Patient/$everything (R4 patient-operation-everything) on two Synthea patients in one vault: exactly one
// patient's record, what it refers to outside the compartment, paged, scoped, audited.
const DATA = fileURLToPath(new URL('../../../fixtures/synthea/', import.meta.url));
const BIBI = `${DATA}Bibi254_Schowalter414_475d72ca-91c7-7211-97e3-f000af33fc04.json`;
const CRIS = `${DATA}Cris921_Rath779_d4519c92-d241-b2b2-7360-291d60be699e.json`;
type R = { resourceType: string; id: string };
const resourcesOf = (file: string): R[] =>
  (JSON.parse(readFileSync(file, 'utf8')) as { entry: { resource: R }[] }).entry.map((e) => e.resource);
const key = (r: R) => `${r.resourceType}/${r.id}`;
const bibi = resourcesOf(BIBI);
const bibiId = (bibi.find((r) => r.resourceType === 'Patient') as R).id;
/** Bibi's file holds her record and the organizations and practitioners it refers to. */
const OUTSIDE = new Set(['Organization', 'Practitioner']);
const record = bibi.filter((r) => !OUTSIDE.has(r.resourceType)).map(key);
const referenced = bibi.filter((r) => OUTSIDE.has(r.resourceType)).map(key);

let p: TestPlatform;
let reader: Caller;
let twoTypes: Caller;
let auditor: Caller;

type Page = Omit<Bundle, 'entry'> & { entry?: { resource: R; search: { mode: string } }[] };
async function everything(query = '', caller = reader, vault = 'ev'): Promise<Page> {
  const r = await fhir(p, caller, 'GET', `/${vault}/Patient/${bibiId}/$everything${query}`);
  assert.equal(r.status, 200, r.text);
  return r.json as unknown as Page;
}
const matches = (b: Page) => (b.entry ?? []).filter((e) => e.search.mode === 'match').map((e) => key(e.resource));
const includes = (b: Page) => (b.entry ?? []).filter((e) => e.search.mode === 'include').map((e) => key(e.resource));

before(async () => {
  p = await startPlatform();
  await partition(p, 'ev');
  await partition(p, 'ev_other');
  reader = await grantedClient(p, 'ev-reader', 'system/*.rs', ['ev', 'ev_other']);
  twoTypes = await grantedClient(p, 'ev-two', 'system/Patient.rs system/Observation.rs', ['ev']);
  auditor = await secretClient(p, 'ev-auditor', 'system/AuditEvent.rs');
  await importCommand(p.config, [BIBI, CRIS], 'ev');
  await importCommand(p.config, [CRIS], 'ev_other');
  setGlobalDispatcher(new Agent({ connect: { ca: p.ca } }));
});
after(() => p.stop());

describe('Patient/$everything', () => {
  test("the patient first, then her whole compartment and nothing of another patient's; what it refers to outside", async () => {
    const b = await everything('?_count=1000');
    assert.equal(b.type, 'searchset');
    assert.equal(matches(b)[0], `Patient/${bibiId}`);
    assert.deepEqual(matches(b).sort(), [...record].sort());
    assert.equal(b.total, record.length);
    assert.deepEqual(includes(b).sort(), [...referenced].sort());
    assert.equal(
      b.link?.find((l) => l.relation === 'next'),
      undefined,
    );
  });

  test('pages of _count follow each other by their next links: every resource once, in the same order', async () => {
    const whole = matches(await everything('?_count=1000'));
    // fhir-kit-client (third party, on the global fetch): its operation() for the first page, nextPage() after.
    const client = new Client({ baseUrl: `${p.fhirBase}/ev`, bearerToken: reader.token });
    let page = (await client.operation({
      name: 'everything',
      resourceType: 'Patient',
      id: bibiId,
      method: 'GET',
      input: { _count: 9 },
    })) as unknown as Page;
    const seen: string[] = [];
    let pages = 0;
    for (;;) {
      pages++;
      assert.ok(matches(page).length <= 9);
      seen.push(...matches(page));
      if (!page.link?.some((l) => l.relation === 'next')) break;
      assert.equal(page.total, undefined, 'the total is known on the last page');
      page = (await client.nextPage({ bundle: page as never })) as unknown as Page;
    }
    assert.deepEqual(seen, whole);
    assert.equal(pages, Math.ceil(whole.length / 9));
    assert.equal(page.total, whole.length);
  });

  test('_type and _since narrow it; bad values are 400', async () => {
    const typed = await everything('?_type=Patient,Observation,Organization&_count=1000');
    const observations = bibi.filter((r) => r.resourceType === 'Observation').map(key);
    assert.deepEqual(matches(typed).sort(), [`Patient/${bibiId}`, ...observations].sort());
    assert.ok(includes(typed).every((k) => k.startsWith('Organization/')));
    const future = await everything(`?_since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`);
    assert.deepEqual(matches(future), []);
    assert.equal(future.total, 0);
    assert.equal(matches(await everything('?_since=2000-01-01T00:00:00Z&_count=1000')).length, record.length);
    const post = await fhir(p, reader, 'POST', `/ev/Patient/${bibiId}/$everything`, {
      resourceType: 'Parameters',
      parameter: [{ name: '_type', valueString: 'Condition' }],
    });
    assert.equal(post.status, 200, post.text);
    const conditions = bibi.filter((r) => r.resourceType === 'Condition').map(key);
    assert.deepEqual(matches(post.json as unknown as Page).sort(), conditions.sort());
    for (const bad of [
      '_type=Nope',
      '_count=0',
      '_since=yesterday',
      '_cursor=abc',
      'start=2020-13',
      'start=yesterday',
      'start=2020-03-06T10:00:00Z',
      'end=2020-02-30',
      'start=2021&end=2020',
      'start=2020&start=2021',
    ]) {
      const r = await fhir(p, reader, 'GET', `/ev/Patient/${bibiId}/$everything?${bad}`);
      assert.equal(r.status, 400, `${bad}: ${r.text}`);
    }
  });

  test('start and end narrow the clinical-date types to those whose care date overlaps them; the rest come whole', async () => {
    /** A resource's care date as SearchParameter clinical-date reads it, for the types of Bibi's record that have one. */
    const careDate = (r: R): [number, number] | undefined => {
      const x = r as R & Record<string, string | { start: string; end?: string } | undefined>;
      const at = x.effectiveDateTime ?? x.occurrenceDateTime ?? x.performedDateTime ?? x.recordedDate;
      if (typeof at === 'string') return [Date.parse(at), Date.parse(at)];
      const period = (x.period ?? x.performedPeriod) as { start: string; end?: string } | undefined;
      return period ? [Date.parse(period.start), period.end ? Date.parse(period.end) : Infinity] : undefined;
    };
    const clinical = new Set([
      'CarePlan',
      'CareTeam',
      'DiagnosticReport',
      'Encounter',
      'Immunization',
      'Observation',
      'Procedure',
    ]);
    const expected = (from: number, until: number) =>
      bibi
        .filter((r) => !OUTSIDE.has(r.resourceType))
        .filter((r) => {
          if (!clinical.has(r.resourceType)) return true;
          const d = careDate(r);
          return d !== undefined && d[1] >= from && d[0] < until;
        })
        .map(key)
        .sort();
    const cases: [string, number, number][] = [
      ['start=2020-03&end=2020-03', Date.UTC(2020, 2), Date.UTC(2020, 3)],
      // 21:20 at -07:00 on the 9th is the 10th in UTC, the zone of a date without one here.
      ['start=2014-04-10&end=2014-04-10', Date.UTC(2014, 3, 10), Date.UTC(2014, 3, 11)],
      ['end=2011', -Infinity, Date.UTC(2012, 0)],
      ['start=2020-05', Date.UTC(2020, 4), Infinity],
    ];
    for (const [query, from, until] of cases) {
      const want = expected(from, until);
      assert.ok(want.length < record.length && want.some((k) => clinical.has(k.split('/')[0] as string)), query);
      assert.deepEqual(matches(await everything(`?${query}&_count=1000`)).sort(), want, query);
    }
    // The next links keep start and end.
    const seen: string[] = [];
    let page = await everything('?start=2020-03&end=2020-03&_count=7');
    for (;;) {
      seen.push(...matches(page));
      const next = page.link?.find((l) => l.relation === 'next')?.url;
      if (!next) break;
      assert.match(next, /start=2020-03&end=2020-03/);
      const r = await fhir(p, reader, 'GET', next.slice(p.fhirBase.length));
      assert.equal(r.status, 200, r.text);
      page = r.json as unknown as Page;
    }
    assert.deepEqual(seen.sort(), expected(Date.UTC(2020, 2), Date.UTC(2020, 3)));
    assert.equal(page.total, seen.length);
  });

  test('only what the token may search and read: other types drop out, asking for one is 403', async () => {
    const b = await everything('?_count=1000', twoTypes);
    const expected = bibi.filter((r) => ['Patient', 'Observation'].includes(r.resourceType)).map(key);
    assert.deepEqual(matches(b).sort(), expected.sort());
    assert.deepEqual(includes(b), [], 'no Organization or Practitioner without a scope to read them');
    const r = await fhir(p, twoTypes, 'GET', `/ev/Patient/${bibiId}/$everything?_type=Condition`);
    assert.equal(r.status, 403, r.text);
  });

  test('another vault, an unknown patient and a stranger are 404; every page is audited', async () => {
    assert.equal((await fhir(p, reader, 'GET', `/ev_other/Patient/${bibiId}/$everything`)).status, 404);
    assert.equal((await fhir(p, reader, 'GET', '/ev/Patient/nobody/$everything')).status, 404);
    const stranger = await mtlsClient(p, 'ev-stranger', 'system/*.rs');
    assert.equal((await fhir(p, stranger, 'GET', `/ev/Patient/${bibiId}/$everything`)).status, 404);
    await everything('?_count=50');
    type Event = { entity?: { description?: string; what?: { reference?: string } }[] };
    const events = await auditEvents<Event>(p, auditor, 'subtype=operation&_count=1000');
    const audited = events
      .map((e) => e.entity ?? [])
      .filter((entity) => entity.some((x) => x.description === '$everything'));
    assert.ok(audited.length >= 1);
    assert.ok(audited.every((entity) => entity.some((x) => x.what?.reference?.endsWith(`Patient/${bibiId}`))));
  });
});
