import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { importCommand } from '../src/admin/import.ts';
import { AuditTrail } from '../src/audit/trail.ts';
import { parseSmartScope, type SmartScope } from '../src/auth/smart-scopes.ts';
import { runBatch } from '../src/fhir/bundle/batch.ts';
import { parseEntries } from '../src/fhir/bundle/entries.ts';
import type { FhirContext } from '../src/fhir/context.ts';
import { extractIndex } from '../src/fhir/search/extract.ts';
import { parseSearch } from '../src/fhir/search/parse.ts';
import { StoreTimeoutError, StoreUnavailableError } from '../src/store/errors.ts';
import { openStore } from '../src/store/index.ts';
import { isCostly } from '../src/store/search-cost.ts';
import { openSqliteStore } from '../src/store/sqlite/index.ts';
import type { Store } from '../src/store/types.ts';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, TEST_STORE, type TestPlatform } from './helpers/platform.ts';

// A search has a time limit (CAREVAULT_SEARCH_TIMEOUT), and on SQLite a costly one runs on a search thread of its
// own, so that it neither runs on and on nor holds up the node's other requests while it runs. Includes read no
// more than they may bring in.

const N = 20_000;
// Sorting every Observation by four keys, and counting them: ≈ 0.2 s on SQLite and ≈ 0.5 s on PostgreSQL
// for 20,000 here, four to ten times the limit below.
const COSTLY = 'Observation?_sort=subject,-value-quantity,code,date&_total=accurate&_count=1';
const CHEAP = 'Observation?subject=Patient/p7&_count=5';
// Sorted by seven keys: a few hundred ms, so that the thread given it stays taken well past its time.
const SLOWER = 'Observation?_sort=-value-quantity,subject,date,code,_lastUpdated,status,_id&_total=accurate&_count=1';
// As few rows, but counted: a search thread's work all the same (store/search-cost.ts).
const COUNTED = 'Observation?subject=Patient/p7&_count=5&_total=accurate';
// Its code drives (15,000 of 20,000 Observations, dense), but no match lies within the walk of the time index:
// the driven plan then reads all 15,000 (sql/search.ts).
const DENSE_MISS = 'Observation?code=http://loinc.org|8480-6&value-quantity=gt1000';

const observation = (i: number) => ({
  resourceType: 'Observation',
  id: `o${i}`,
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: i % 4 === 0 ? '8867-4' : '8480-6' }] },
  subject: { reference: `Patient/p${i % 400}` },
  effectiveDateTime: new Date(Date.UTC(2020, 0, 1) + i * 60_000).toISOString(),
  valueQuantity: { value: 60 + (i % 70), unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
});

/** The store's query for a search URL, as the search interaction builds it. */
const query = (q: string) => {
  const parsed = parseSearch(q.split('?')[0] as string, [...new URLSearchParams(q.split('?')[1])], {
    base: 'https://x/fhir/big',
    strict: false,
  });
  return { ...parsed.query, total: parsed.totalMode === 'accurate' };
};

let p: TestPlatform;
/** The same database with time enough for any search here. */
let patient: Store;
let reader: Caller;
let auditor: Caller;
/** May read only the heart rates (8867-4): every fourth patient's Observations, all 50 of them. */
let heartRates: Caller;

before(async () => {
  p = await startPlatform({}, { env: { CAREVAULT_SEARCH_TIMEOUT: '0.05' } });
  await partition(p, 'big');
  reader = await secretClient(p, 'reader', 'system/*.rs');
  await grant(p, { partition: 'big', client: 'reader', scope: 'system/*.rs' });
  auditor = await secretClient(p, 'auditor', 'system/AuditEvent.rs');
  heartRates = await secretClient(
    p,
    'heart-rates',
    'system/Patient.rs system/Observation.rs?code=http://loinc.org|8867-4',
  );
  await grant(p, { partition: 'big', client: 'heart-rates', scope: 'system/*.rs' });
  const lines = [
    ...Array.from({ length: 400 }, (_, k) => JSON.stringify({ resourceType: 'Patient', id: `p${k}` })),
    ...Array.from({ length: N }, (_, i) => JSON.stringify(observation(i))),
  ];
  const file = join(p.dataDir, 'observations.ndjson');
  writeFileSync(file, `${lines.join('\n')}\n`);
  await importCommand(p.config, [file], 'big');
  patient = await openStore({
    dataDir: p.dataDir,
    databaseUrl: p.config.databaseUrl,
    searchThreads: 1,
    searchTimeout: 10_000,
  });
});
after(async () => {
  await patient.close();
  await p.stop();
});

describe('a search past CAREVAULT_SEARCH_TIMEOUT', () => {
  test('is answered 400 too-costly and audited as failed; the next search is answered', async () => {
    const requestId = `costly-${Date.now()}`;
    const started = performance.now();
    const r = await fhir(p, reader, 'GET', `/big/${COSTLY}`, undefined, { 'x-request-id': requestId });
    const took = performance.now() - started;
    assert.equal(r.status, 400, r.text);
    const issue = (r.json as { issue: { code: string; diagnostics: string }[] }).issue[0];
    assert.equal(issue?.code, 'too-costly');
    assert.match(issue?.diagnostics ?? '', /ran longer than this server allows/);
    // Answered at the limit, not when the search would have ended.
    assert.ok(took < 5000, `${took} ms`);

    const audit = await p.fetch(`${p.base}/audit/AuditEvent?request-id=${requestId}`, {
      dispatcher: p.agent(),
      headers: { authorization: `Bearer ${auditor.token}` },
    });
    const events = ((await audit.json()) as { entry?: { resource: { outcome: string } }[] }).entry ?? [];
    assert.deepEqual(
      events.map((e) => e.resource.outcome),
      ['4'],
    );

    const cheap = await fhir(p, reader, 'GET', `/big/${CHEAP}`);
    assert.equal(cheap.status, 200, cheap.text);
    assert.equal((cheap.json as { entry: unknown[] }).entry.length, 5);
  });

  test("in a batch, is that entry's failure: the other entries are answered", async () => {
    const r = await fhir(p, reader, 'POST', '/big', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [{ request: { method: 'GET', url: COSTLY } }, { request: { method: 'GET', url: CHEAP } }],
    });
    assert.equal(r.status, 200, r.text);
    type Entry = {
      response: { status: string; outcome?: { issue: { code: string }[] } };
      resource?: { entry?: unknown[] };
    };
    const [costly, cheap] = (r.json as { entry: Entry[] }).entry;
    assert.match(costly?.response.status ?? '', /^400/);
    assert.equal(costly?.response.outcome?.issue[0]?.code, 'too-costly');
    assert.match(cheap?.response.status ?? '', /^200/);
    assert.equal(cheap?.resource?.entry?.length, 5);
  });

  test('the same search given time enough is answered in full', async () => {
    const { total, matches } = await patient.resources.search('big', query(COSTLY));
    assert.equal(total, N);
    // Patient/p0's Observations first, the highest value of theirs first.
    const p0 = Array.from({ length: N }, (_, i) => observation(i)).filter((o) => o.subject.reference === 'Patient/p0');
    const top = JSON.parse(matches[0]?.content ?? '{}');
    assert.equal(top.subject.reference, 'Patient/p0');
    assert.equal(top.valueQuantity.value, Math.max(...p0.map((o) => o.valueQuantity.value)));
  });
});

describe('_include and _revinclude past 1,000 resources', () => {
  type Bundle = {
    entry?: { resource: { resourceType: string }; search: { mode: string } }[];
    issue?: { code: string }[];
  };
  const ids = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => `p${from + k}`).join(',');
  // These count what is brought in, not time: a node on the same database without the 50 ms limit, which a
  // lookup of 2,000 rows can pass on a busy machine.
  let roomy: TestPlatform;
  before(async () => {
    roomy = await startPlatform({}, { nodeOf: p });
  });
  after(() => roomy.stop());

  test('more than 1,000 to bring in is 400 too-costly', async () => {
    // 400 patients with 50 Observations each: 20,000 to bring in, of which 1,001 tell.
    const r = await fhir(roomy, reader, 'GET', '/big/Patient?_count=400&_revinclude=Observation:subject');
    assert.equal(r.status, 400, r.text);
    assert.equal((r.json as Bundle).issue?.[0]?.code, 'too-costly');
  });

  test('rows a client may not read do not count: all of those it may read are brought in', async () => {
    // 40 patients, 2,000 Observations, of which only p4, p8 … p40's 500 heart rates are readable: more rows than
    // a lookup reads first (1,041), with fewer than 1,000 among them to bring in.
    const r = await fhir(
      roomy,
      heartRates,
      'GET',
      `/big/Patient?_id=${ids(1, 41)}&_count=40&_revinclude=Observation:subject`,
    );
    assert.equal(r.status, 200, r.text);
    const entries = (r.json as Bundle).entry ?? [];
    assert.equal(entries.filter((e) => e.search.mode === 'match').length, 40);
    assert.equal(entries.filter((e) => e.search.mode === 'include').length, 10 * 50);
  });

  test('a lookup not settled by its cap is read again by sizes alone; the contents brought in are read after', async () => {
    // 30 Basic point to p0 beside the 1,000 Observations of p0 … p19: 1,030 rows for `*:*`, more than the capped
    // lookup takes (1,021). A client that may read Patients and Observations only has 1,000 of them to bring in,
    // so the lookup is read again in full: the rows' sizes alone, then the contents of those brought in.
    const writer = await secretClient(p, 'basic-writer', 'system/Basic.cu');
    await grant(p, { partition: 'big', client: 'basic-writer', scope: 'system/Basic.cu' });
    const basics = Array.from({ length: 30 }, (_, k) => ({
      resource: { resourceType: 'Basic', id: `b${k}`, code: { text: 'note' }, subject: { reference: 'Patient/p0' } },
      request: { method: 'PUT', url: `Basic/b${k}` },
    }));
    const tx = await fhir(roomy, writer, 'POST', '/big', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: basics,
    });
    assert.equal(tx.status, 200, tx.text);
    const obsOnly = await secretClient(p, 'obs-only', 'system/Patient.rs system/Observation.rs');
    await grant(p, { partition: 'big', client: 'obs-only', scope: 'system/*.rs' });
    const r = await fhir(roomy, obsOnly, 'GET', `/big/Patient?_id=${ids(0, 20)}&_count=20&_revinclude=*:*`);
    assert.equal(r.status, 200, r.text);
    const included = ((r.json as Bundle).entry ?? []).filter((e) => e.search.mode === 'include');
    assert.equal(included.length, 1000);
    for (const e of included) {
      const o = e.resource as unknown as { resourceType: string; id: string; subject: { reference: string } };
      assert.equal(o.resourceType, 'Observation', 'no Basic: the token may not read them');
      assert.equal(o.subject.reference, `Patient/p${Number(o.id.slice(1)) % 400}`);
    }
    // With every type readable they are 1,030: past what may be brought in.
    const all = await fhir(roomy, reader, 'GET', `/big/Patient?_id=${ids(0, 20)}&_count=20&_revinclude=*:*`);
    assert.equal(all.status, 400, all.text);
  });

  test('a lookup reads no more rows than asked for', async () => {
    const targets = [1, 2, 3].map((k) => ({ type: 'Patient', id: `p${k}` }));
    assert.equal((await patient.resources.referencing('big', 'Observation', 'subject', targets)).length, 150);
    assert.equal(
      (await patient.resources.referencing('big', 'Observation', 'subject', targets, { limit: 70 })).length,
      70,
    );
    const sources = ['o1', 'o2', 'o3', 'o4'];
    assert.equal((await patient.resources.referencedBy('big', 'Observation', sources, 'subject')).length, 4);
    assert.equal(
      (await patient.resources.referencedBy('big', 'Observation', sources, 'subject', undefined, { limit: 3 })).length,
      3,
    );
  });

  test('up to 1,000 are brought in', async () => {
    const r = await fhir(
      roomy,
      reader,
      'GET',
      `/big/Patient?_id=${ids(0, 20)}&_count=20&_revinclude=Observation:subject`,
    );
    assert.equal(r.status, 200, r.text);
    assert.equal(((r.json as Bundle).entry ?? []).filter((e) => e.search.mode === 'include').length, 1000);
  });
});

describe("a transaction's searches", () => {
  test('past the limit together, the transaction fails and leaves nothing; the next one commits', async () => {
    const short = await openStore({
      dataDir: p.dataDir,
      databaseUrl: p.config.databaseUrl,
      searchThreads: 1,
      searchTimeout: 50,
    });
    const basic = (id: string) => ({
      type: 'Basic',
      id,
      version: 1,
      lastUpdated: new Date().toISOString(),
      method: 'PUT' as const,
      content: JSON.stringify({ resourceType: 'Basic', id }),
      index: extractIndex({ resourceType: 'Basic', id }),
    });
    try {
      // A condition checked again under the write lock: nothing can interrupt it there, so the transaction
      // stops once its searches have taken longer than a search may.
      const failed = short.resources.transaction('big', async (tx) => {
        await tx.write(basic('before-the-search'));
        for (let i = 0; i < 1000; i++) await tx.search(query(COSTLY));
        return 'all searched';
      });
      await assert.rejects(failed, StoreTimeoutError);
      assert.equal(await short.resources.current('big', 'Basic', 'before-the-search'), undefined);
      const cheap = await short.resources.transaction('big', async (tx) => {
        await tx.write(basic('after'));
        return (await tx.search(query(CHEAP))).matches.length;
      });
      assert.equal(cheap, 5);
      assert.equal((await short.resources.current('big', 'Basic', 'after'))?.version, 1);
    } finally {
      await short.close();
    }
  });
});

describe('SQLite: searches on threads of their own', { skip: TEST_STORE !== 'sqlite' && 'SQLite run only' }, () => {
  test("a costly search does not hold up the node's reads", async () => {
    const started = performance.now();
    const costly = patient.resources.search('big', query(COSTLY)).then(() => performance.now() - started);
    // The next turn of the event loop, and a read in it: on the server's own thread both would wait for the
    // search's statements (its sort is most of its time).
    const read = new Promise((resolve) => setTimeout(resolve, 0))
      .then(() => patient.resources.current('big', 'Observation', 'o1'))
      .then((v) => ({ v, at: performance.now() - started }));
    const { v, at } = await read;
    assert.equal(v?.version, 1);
    const searched = await costly;
    assert.ok(at < searched / 4, `read after ${at.toFixed(0)} ms, the search took ${searched.toFixed(0)} ms`);
  });

  test("in a batch, a condition that finds every search thread taken is its entry's 503: the entries after it run", async () => {
    const short = openSqliteStore(join(p.dataDir, 'carevault.sqlite'), { searchThreads: 1, searchTimeout: 50 });
    const scopes = [parseSmartScope('system/*.cruds') as SmartScope];
    const ctx: FhirContext = {
      store: short,
      partition: 'big',
      base: 'https://localhost/fhir/big',
      access: { partition: 'big', clientId: 'batcher', tokenScopes: scopes, grantScopes: scopes, person: false },
      who: { clientId: 'batcher' },
      audit: new AuditTrail(short, false, 'test', { error: () => {} }),
    };
    const basic = (text: string) => ({
      resource: { resourceType: 'Basic', code: { text } },
      request: { method: 'POST', url: 'Basic' },
    });
    try {
      // The slow search is given up after 50 ms, but its thread stays inside the statement for a few hundred:
      // the condition of the conditional create after the write (`:text`, a thread's work) waits its 50 ms for
      // the store's only thread in vain. The database is there all along: the entries after it are run.
      const { entries } = parseEntries(
        {
          resourceType: 'Bundle',
          type: 'batch',
          entry: [
            { request: { method: 'GET', url: SLOWER } },
            basic('written before'),
            {
              ...basic('created if none is'),
              request: { method: 'POST', url: 'Basic', ifNoneExist: 'code:text=never' },
            },
            { request: { method: 'GET', url: CHEAP } },
            basic('written after'),
          ],
        },
        ctx.base,
      );
      const results = await runBatch(ctx, entries, false);
      assert.deepEqual(
        results.map((r) => r.status),
        [400, 201, 503, 200, 201],
      );
      for (const i of [1, 4]) {
        const id = results[i]?.version?.id as string;
        assert.equal((await short.resources.current('big', 'Basic', id))?.version, 1);
      }
    } finally {
      await short.close();
    }
  });

  test('a search waiting longer than its time for a thread is told to retry; the thread comes back', async () => {
    const short = openSqliteStore(join(p.dataDir, 'carevault.sqlite'), { searchThreads: 1, searchTimeout: 50 });
    try {
      await assert.rejects(short.resources.search('big', query(COSTLY)), StoreTimeoutError);
      // Its only thread is still inside the costly statement, which SQLite cannot be made to leave.
      // So a counted search, and a plain one whose dense condition's walk missed, wait for it and are told to
      // retry; a plain search is answered on the store's own thread meanwhile.
      const waiting = [COUNTED, DENSE_MISS].map((q) =>
        assert.rejects(short.resources.search('big', query(q)), StoreUnavailableError, q),
      );
      assert.equal((await short.resources.search('big', query(CHEAP))).matches.length, 5);
      await Promise.all(waiting);
      let answered: number | undefined;
      for (let i = 0; i < 100 && answered === undefined; i++) {
        answered = await short.resources.search('big', query(COUNTED)).then(
          (r) => r.total,
          () => undefined,
        );
      }
      assert.equal(answered, N / 400);
    } finally {
      await short.close();
    }
  });
});

describe('which searches get a thread and the time limit on SQLite', () => {
  test('those whose work grows with the vault, not with their page', () => {
    for (const q of [
      'Observation?subject=Patient/p7&_total=accurate',
      'Observation?subject=Patient/p7&_sort=date',
      'Observation?subject=Patient/p7&_offset=10',
      'Observation?code:text=pulse',
      'Observation?code:not=8867-4',
      'Observation?code:missing=true',
      'Patient?name:contains=ann',
      'Observation?subject:Patient.name=ann',
      'Patient?_has:Observation:subject:code=8867-4',
    ]) {
      assert.equal(isCostly(query(q)), true, q);
    }
    for (const q of [
      'Observation?code=http://loinc.org|8867-4&subject=Patient/p7',
      'Observation?subject=Patient/p7&_sort=-_lastUpdated&_count=100',
      'Observation?date=ge2020-01-01',
      'Patient?name=ann',
      'Observation?_lastUpdated=gt2020-01-01',
    ]) {
      assert.equal(isCostly(query(q)), false, q);
    }
  });
});
