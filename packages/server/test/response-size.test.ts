import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { importCommand } from '../src/admin/import.ts';
import { openStore } from '../src/store/index.ts';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// An answer holds at most CAREVAULT_MAX_RESPONSE_MB of resource JSON: pages end there and go on by their next
// link, and a batch or transaction runs no more entries once its answer is full. Before, a batch of 2,500
// searches held 2.9 GB for 20 s and answered 500 (V8's longest string), and a page of large documents had no
// bound but the page size.

const LIMIT = 1024 * 1024; // CAREVAULT_MAX_RESPONSE_MB=1
const DOCS = 30;
// ≈ 100,250 characters each as stored: ten fit into 1 MiB, eleven do not.
const data = 'A'.repeat(100_000);
const document = (id: string, patient: string, parts = [data]) => ({
  resourceType: 'DocumentReference',
  id,
  status: 'current',
  subject: { reference: `Patient/${patient}` },
  date: new Date(Date.UTC(2024, 0, 1) + Number(id.replace(/\D/g, '')) * 86_400_000).toISOString(),
  content: parts.map((part) => ({ attachment: { contentType: 'application/pdf', data: part } })),
});

type Bundle = {
  type: string;
  total?: number;
  link: { relation: string; url: string }[];
  entry?: {
    resource?: { resourceType: string; id: string; entry?: unknown[] };
    response?: { status: string; outcome?: { issue: { code: string; diagnostics: string }[] } };
  }[];
};

let p: TestPlatform;
let reader: Caller;
let writer: Caller;

before(async () => {
  p = await startPlatform({}, { env: { CAREVAULT_MAX_RESPONSE_MB: '1' } });
  await partition(p, 'docs');
  reader = await secretClient(p, 'reader', 'system/*.rs');
  await grant(p, { partition: 'docs', client: 'reader', scope: 'system/*.rs' });
  writer = await secretClient(p, 'writer', 'system/*.cruds');
  await grant(p, { partition: 'docs', client: 'writer', scope: 'system/*.cruds' });
  const lines = [
    { resourceType: 'Patient', id: 'p1' },
    { resourceType: 'Patient', id: 'p2' },
    ...Array.from({ length: DOCS }, (_, i) => document(`d${i}`, 'p1')),
    // p2: one document larger than the whole limit (a FHIR string is at most 1 MB), then two small ones.
    document('d100', 'p2', ['B'.repeat(LIMIT / 2), 'B'.repeat(LIMIT / 2)]),
    document('d101', 'p2', ['CCCC']),
    document('d102', 'p2', ['DDDD']),
  ].map((r) => JSON.stringify(r));
  const file = join(p.dataDir, 'documents.ndjson');
  writeFileSync(file, `${lines.join('\n')}\n`);
  await importCommand(p.config, [file], 'docs');
  // Another vault: twelve heart rates of ≈ 100,000 characters each, one a day (more than $lastn may read at once).
  await partition(p, 'vitals');
  await grant(p, { partition: 'vitals', client: 'reader', scope: 'system/*.rs' });
  const vitals = [
    { resourceType: 'Patient', id: 'v1' },
    ...Array.from({ length: 12 }, (_, i) => ({
      resourceType: 'Observation',
      id: `hr${i + 1}`,
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
      subject: { reference: 'Patient/v1' },
      effectiveDateTime: `2024-01-${String(i + 1).padStart(2, '0')}`,
      valueString: data,
    })),
  ].map((r) => JSON.stringify(r));
  writeFileSync(join(p.dataDir, 'vitals.ndjson'), `${vitals.join('\n')}\n`);
  await importCommand(p.config, [join(p.dataDir, 'vitals.ndjson')], 'vitals');
});
after(() => p.stop());

/** The resource JSON a page holds, as the limit counts it. */
const held = (b: Bundle) => (b.entry ?? []).reduce((n, e) => n + JSON.stringify(e.resource ?? '').length, 0);

/** Every page from `first` on by its next links: each page's ids. */
async function pages(first: string, caller = reader): Promise<string[][]> {
  const out: string[][] = [];
  let url: string | undefined = first;
  while (url) {
    const r = await fhir(p, caller, 'GET', url.startsWith('https:') ? url.slice(p.fhirBase.length) : url);
    assert.equal(r.status, 200, r.text);
    const b = r.json as unknown as Bundle;
    if ((b.entry?.length ?? 0) > 1) assert.ok(held(b) <= LIMIT, `a page of ${b.entry?.length} holds ${held(b)}`);
    out.push((b.entry ?? []).map((e) => `${e.resource?.resourceType}/${e.resource?.id}`));
    url = b.link.find((l) => l.relation === 'next')?.url;
    assert.ok(out.length < 50, 'the next links do not end');
  }
  return out;
}

const allDocs = Array.from({ length: DOCS }, (_, i) => `DocumentReference/d${i}`).sort();

describe('a page holds at most CAREVAULT_MAX_RESPONSE_MB', () => {
  test('a search page ends at the limit; its next links (by cursor) bring every match once', async () => {
    const seen = await pages(`/docs/DocumentReference?subject=Patient/p1&_count=${DOCS}`);
    assert.deepEqual(
      seen.map((ids) => ids.length),
      [10, 10, 10],
    );
    assert.deepEqual(seen.flat().sort(), allDocs);
  });

  test('by offset too (a sort other than _lastUpdated), in the sorted order', async () => {
    const seen = await pages(`/docs/DocumentReference?subject=Patient/p1&_sort=-date&_count=25`);
    assert.deepEqual(
      seen.map((ids) => ids.length),
      [10, 10, 10],
    );
    assert.deepEqual(
      seen.flat(),
      Array.from({ length: DOCS }, (_, i) => `DocumentReference/d${DOCS - 1 - i}`),
    );
  });

  test('a resource larger than the limit is a page of its own, and paging goes past it', async () => {
    const seen = await pages('/docs/DocumentReference?subject=Patient/p2&_sort=date&_count=10');
    assert.deepEqual(seen, [['DocumentReference/d100'], ['DocumentReference/d101', 'DocumentReference/d102']]);
  });

  test('with _total the count is of every match, not of the shortened page', async () => {
    const r = await fhir(p, reader, 'GET', `/docs/DocumentReference?subject=Patient/p1&_total=accurate&_count=20`);
    const b = r.json as unknown as Bundle;
    assert.equal(b.total, DOCS);
    assert.equal(b.entry?.length, 10);
  });

  test('history pages end at the limit and page on by cursor through every version', async () => {
    const seen = await pages(`/docs/DocumentReference/_history?_count=100`);
    assert.ok(seen.length >= 4, `${seen.length} pages`);
    assert.deepEqual(
      seen
        .flat()
        .filter((id) => allDocs.includes(id))
        .sort(),
      allDocs,
    );
  });

  test('$everything pages end at the limit and bring the whole record', async () => {
    const seen = await pages('/docs/Patient/p1/$everything?_count=100');
    assert.ok(seen.length >= 3, `${seen.length} pages`);
    const flat = seen.flat();
    assert.equal(new Set(flat).size, flat.length, 'no resource twice');
    assert.deepEqual(flat.filter((id) => id.startsWith('DocumentReference/')).sort(), allDocs);
    assert.ok(flat.includes('Patient/p1'));
  });

  test('included resources past the limit are refused 400 too-costly, not cut', async () => {
    const r = await fhir(p, reader, 'GET', '/docs/Patient?_id=p1&_revinclude=DocumentReference:subject');
    assert.equal(r.status, 400, r.text.slice(0, 300));
    const issue = (r.json as { issue: { code: string; diagnostics: string }[] }).issue[0];
    assert.equal(issue?.code, 'too-costly');
    assert.match(issue?.diagnostics ?? '', /included resources is more than the 1 MiB .*lower _count/);
    // Fewer matches per page bring their includes.
    const fewer = await fhir(p, reader, 'GET', '/docs/DocumentReference?_id=d1,d2&_include=DocumentReference:subject');
    assert.equal(fewer.status, 200, fewer.text.slice(0, 300));
    assert.equal((fewer.json as unknown as Bundle).entry?.length, 3);
  });

  test('$lastn reads at most the limit of matches: past it a 400 too-costly asks to narrow the search', async () => {
    const r = await fhir(p, reader, 'GET', '/vitals/Observation/$lastn?patient=v1&code=http://loinc.org|8867-4');
    assert.equal(r.status, 400, r.text.slice(0, 300));
    const issue = (r.json as { issue: { code: string; diagnostics: string }[] }).issue[0];
    assert.equal(issue?.code, 'too-costly');
    assert.match(issue?.diagnostics ?? '', /at most 10000 matching Observations \(1 MiB\); narrow it with date/);
    const narrowed = await fhir(
      p,
      reader,
      'GET',
      '/vitals/Observation/$lastn?patient=v1&code=http://loinc.org|8867-4&date=ge2024-01-06&max=2',
    );
    assert.equal(narrowed.status, 200, narrowed.text.slice(0, 300));
    assert.deepEqual(
      (narrowed.json as unknown as Bundle).entry?.map((e) => e.resource?.id),
      ['hr12', 'hr11'],
    );
  });

  test('included resources larger than a row brings inline arrive whole; past the limit, still refused', async () => {
    // Observations of ≈ 150 KB each: more than the 64 KiB the store reads with a row, read once they fit.
    const note = (n: number) => String(n).repeat(150_000);
    const put = (resource: { resourceType: string; id: string }) =>
      fhir(p, writer, 'PUT', `/docs/${resource.resourceType}/${resource.id}`, resource);
    assert.equal((await put({ resourceType: 'Patient', id: 'p3' })).status, 201);
    for (let n = 1; n <= 8; n++) {
      const obs = {
        resourceType: 'Observation',
        id: `o${n}`,
        status: 'final',
        code: { text: 'note' },
        subject: { reference: 'Patient/p3' },
        valueString: note(n),
      };
      assert.equal((await put(obs)).status, 201);
    }
    const three = await fhir(p, reader, 'GET', '/docs/Patient?_id=p3&_revinclude=Observation:subject&_count=1');
    // Eight of 150 KB are more than 1 MiB.
    assert.equal(three.status, 400, three.text.slice(0, 300));
    const some = await fhir(p, reader, 'GET', '/docs/Observation?_id=o1,o2,o3&_include=Observation:subject');
    assert.equal(some.status, 200);
    const back = await fhir(
      p,
      reader,
      'GET',
      '/docs/Observation?_id=o1&_include=Observation:subject&_revinclude:iterate=Observation:subject',
    );
    assert.equal(back.status, 400, 'the iterated round passes the limit too');
    const remove = (...ids: string[]) =>
      Promise.all(ids.map((id) => fhir(p, writer, 'DELETE', `/docs/Observation/${id}`)));
    await remove('o4', 'o5', 'o6', 'o7', 'o8');
    const whole = await fhir(p, reader, 'GET', '/docs/Patient?_id=p3&_revinclude=Observation:subject');
    assert.equal(whole.status, 200, whole.text.slice(0, 300));
    const entries = (whole.json as unknown as { entry: { resource: { id: string; valueString?: string } }[] }).entry;
    assert.deepEqual(entries.map((e) => e.resource.id).sort(), ['o1', 'o2', 'o3', 'p3']);
    for (const e of entries.filter((x) => x.resource.id.startsWith('o')))
      assert.equal(e.resource.valueString, note(Number(e.resource.id.slice(1))));
    await remove('o1', 'o2', 'o3');
  });
});

describe('the store reads a page no further than maxBytes', () => {
  test('matches past it are left out and the result says more; large contents are read whole; history alike', async () => {
    const store = await openStore({ dataDir: p.dataDir, databaseUrl: p.config.databaseUrl });
    try {
      const query = (maxBytes?: number) => ({
        type: 'DocumentReference',
        filters: [{ kind: 'reference' as const, param: 'subject', values: [{ type: 'Patient', id: 'p1' }] }],
        sort: [],
        limit: DOCS + 1,
        offset: 0,
        total: false,
        ...(maxBytes === undefined ? {} : { maxBytes }),
      });
      const cut = await store.resources.search('docs', query(LIMIT));
      assert.equal(cut.more, true);
      assert.equal(cut.matches.length, 10);
      for (const m of cut.matches) {
        const doc = JSON.parse(m.content) as { id: string; content: { attachment: { data: string } }[] };
        assert.equal(m.id, doc.id);
        assert.equal(doc.content[0]?.attachment.data, data, 'the content larger than a row brings inline, whole');
      }
      // Always the first, however large.
      assert.equal((await store.resources.search('docs', query(1))).matches.length, 1);
      const all = await store.resources.search('docs', query());
      assert.equal(all.more, false);
      assert.deepEqual(all.matches.map((m) => `DocumentReference/${m.id}`).sort(), allDocs);

      // History: the versions within it, read whole, then one with its size alone to say there are more.
      const versions = await store.resources.history('docs', {
        type: 'DocumentReference',
        limit: 100,
        maxBytes: LIMIT,
      });
      const past = versions.at(-1);
      const within = versions.slice(0, -1);
      assert.equal(past?.content, undefined);
      assert.ok((past?.size ?? 0) > 0);
      for (const v of within) {
        assert.equal(v.size, undefined);
        assert.equal((JSON.parse(v.content as string) as { id: string }).id, v.id);
      }
      const used = within.reduce((n, v) => n + Buffer.byteLength(v.content as string), 0);
      assert.ok(within.length === 1 || used <= LIMIT, `${used} bytes in ${within.length}`);
      assert.ok(used + (past?.size ?? 0) > LIMIT);
      const whole = await store.resources.history('docs', { type: 'DocumentReference', limit: 100 });
      assert.equal(whole.length, DOCS + 3);
      assert.ok(whole.every((v) => v.size === undefined && (v.content?.length ?? 0) > 0));

      // Included resources come with their content up to 64 KiB and their size always: the search decides
      // whether they fit before the large ones are read.
      const pointing = await store.resources.referencing('docs', 'DocumentReference', 'subject', [
        { type: 'Patient', id: 'p2' },
      ]);
      const byId = Object.fromEntries(pointing.map((r) => [r.id, r]));
      assert.deepEqual(Object.keys(byId).sort(), ['d100', 'd101', 'd102']);
      assert.equal(byId.d100?.content, null);
      assert.ok((byId.d100?.size ?? 0) > LIMIT);
      assert.equal(byId.d101?.size, Buffer.byteLength(byId.d101?.content ?? ''));
      const [subject] = await store.resources.referencedBy('docs', 'DocumentReference', ['d100'], 'subject');
      assert.equal(subject?.id, 'p2');
      assert.equal(subject?.size, Buffer.byteLength(subject?.content ?? 'x'));
      // Asked for sizes alone (a lookup read again in full), no content comes, however small.
      const sized = await store.resources.referencing(
        'docs',
        'DocumentReference',
        'subject',
        [{ type: 'Patient', id: 'p2' }],
        { contents: false },
      );
      assert.deepEqual(
        sized.map((r) => [r.id, r.content, r.size]).sort(),
        pointing.map((r) => [r.id, null, r.size]).sort(),
      );
      const [sizedSubject] = await store.resources.referencedBy(
        'docs',
        'DocumentReference',
        ['d100'],
        'subject',
        undefined,
        {
          contents: false,
        },
      );
      assert.deepEqual([sizedSubject?.content, sizedSubject?.size], [null, subject?.size]);
    } finally {
      await store.close();
    }
  });
});

describe('a batch or transaction answer holds at most CAREVAULT_MAX_RESPONSE_MB', () => {
  const search = { request: { method: 'GET', url: `DocumentReference?subject=Patient/p1&_count=${DOCS}` } };

  test('a batch runs no entry once its answer is full: each says so, and nothing of them is written', async () => {
    const r = await fhir(p, writer, 'POST', '/docs', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        search,
        search,
        search,
        {
          request: { method: 'POST', url: 'Observation' },
          resource: { resourceType: 'Observation', status: 'final', code: { text: 'not-run' } },
        },
      ],
    });
    assert.equal(r.status, 200, r.text.slice(0, 300));
    const entries = (r.json as unknown as Bundle).entry ?? [];
    assert.equal(entries.length, 4);
    // The first fills the answer with 10 documents; the second has 1 MiB less those, and still gets its first
    // match, so that every entry that runs answers something; the rest are not run.
    assert.deepEqual(
      entries.map((e) => [e.response?.status, e.resource?.entry?.length]),
      [
        ['200 OK', 10],
        ['200 OK', 1],
        ['400 Bad Request', undefined],
        ['400 Bad Request', undefined],
      ],
    );
    for (const e of entries.slice(2)) {
      assert.equal(e.response?.outcome?.issue[0]?.code, 'too-costly');
      assert.match(e.response?.outcome?.issue[0]?.diagnostics ?? '', /^not run: .*1 MiB.*another Bundle/);
    }
    const written = await fhir(p, reader, 'GET', '/docs/Observation?_summary=count');
    assert.equal((written.json as unknown as Bundle).total, 0);
  });

  test("a transaction's writes are committed and reported; its reads past the limit are not run", async () => {
    const r = await fhir(p, writer, 'POST', '/docs', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        search,
        search,
        {
          fullUrl: 'urn:uuid:7d4c1c55-7d4e-4a43-9a53-1d7e3f1a0001',
          request: { method: 'POST', url: 'Patient' },
          resource: { resourceType: 'Patient', name: [{ family: 'Answered' }] },
        },
        search,
      ],
    });
    assert.equal(r.status, 200, r.text.slice(0, 300));
    const entries = (r.json as unknown as Bundle).entry ?? [];
    assert.deepEqual(
      entries.map((e) => e.response?.status),
      ['200 OK', '200 OK', '201 Created', '400 Bad Request'],
    );
    const found = await fhir(p, reader, 'GET', '/docs/Patient?family=Answered');
    assert.equal((found.json as unknown as Bundle).entry?.length, 1);
  });
});
