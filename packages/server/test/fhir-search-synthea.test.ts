import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { importCommand } from '../src/admin/import.ts';
import { SEARCH_INDEX_GENERATION } from '../src/fhir/search/reindex.ts';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { freePort, startPlatform, type TestPlatform } from './helpers/platform.ts';
import { rawSql } from './helpers/raw-db.ts';
import { serveChild } from './helpers/serve.ts';
import { ok } from './helpers/zorgviewer.ts';

// Issue 14 §5: four search answers that were wrong, checked against the Synthea fixtures. Expected matches are
// computed from the fixture files themselves, so the assertions name exactly the resources a correct server finds.

const DATA = fileURLToPath(new URL('../../../fixtures/synthea/', import.meta.url));
const files = readdirSync(DATA)
  .filter((f) => f.endsWith('.json'))
  .map((f) => join(DATA, f));
type R = Record<string, unknown> & { resourceType: string; id: string };
const resources = new Map<string, R>();
for (const f of files) {
  for (const e of (JSON.parse(readFileSync(f, 'utf8')) as { entry: { resource: R }[] }).entry) {
    resources.set(`${e.resource.resourceType}/${e.resource.id}`, e.resource);
  }
}
const observations = [...resources.values()].filter((r) => r.resourceType === 'Observation');
const value = (x: unknown) => (x as { valueQuantity?: { value?: number } } | undefined)?.valueQuantity?.value;

let p: TestPlatform;
let reader: Caller;
type Bundle = {
  total?: number;
  entry?: { resource: R & { meta?: { tag?: { code: string }[] } }; search: { mode: string } }[];
};
async function get(query: string): Promise<Bundle> {
  const r = await fhir(p, reader, 'GET', `/synthea/${query}`);
  assert.equal(r.status, 200, `${query}: ${r.text}`);
  return r.json as unknown as Bundle;
}
const matchIds = (b: Bundle) =>
  (b.entry ?? [])
    .filter((e) => e.search.mode === 'match')
    .map((e) => e.resource.id)
    .sort();

before(async () => {
  p = await startPlatform();
  await partition(p, 'synthea');
  reader = await secretClient(p, 'synthea-reader', 'system/*.rs');
  await grant(p, { partition: 'synthea', client: 'synthea-reader', scope: 'system/*.rs' });
  await importCommand(p.config, files, 'synthea');
});
after(() => p.stop());

describe('quantities inside lists (`as Quantity` on components → `.ofType(Quantity)`)', () => {
  test('component-value-quantity=gt130 finds the three systolic pressures above 130', async () => {
    const expected = observations
      .filter((o) => ((o.component as unknown[]) ?? []).some((c) => (value(c) ?? 0) > 130))
      .map((o) => o.id)
      .sort();
    const values = observations
      .flatMap((o) => ((o.component as unknown[]) ?? []).map(value))
      .filter((v): v is number => (v ?? 0) > 130)
      .sort();
    assert.deepEqual(values, [131, 134, 138]);
    assert.equal(expected.length, 3);
    assert.deepEqual(matchIds(await get('Observation?component-value-quantity=gt130&_count=200')), expected);
  });

  test('combo-value-quantity=gt130 finds those and every Observation value above 130', async () => {
    const expected = observations
      .filter((o) => (value(o) ?? 0) > 130 || ((o.component as unknown[]) ?? []).some((c) => (value(c) ?? 0) > 130))
      .map((o) => o.id)
      .sort();
    const found = matchIds(await get('Observation?combo-value-quantity=gt130&_count=200'));
    assert.deepEqual(found, expected);
    assert.ok(found.length > 3);
  });
});

describe('an index built by older definitions is rebuilt', () => {
  const stale = async () => {
    await rawSql(
      p.dataDir,
      "DELETE FROM idx_quantity WHERE partition = ? AND param IN ('component-value-quantity', 'combo-value-quantity')",
      ['synthea'],
    );
    await rawSql(p.dataDir, "UPDATE store_meta SET value = 'older' WHERE key = 'search-index'");
    assert.deepEqual(matchIds(await get('Observation?component-value-quantity=gt130')), []);
  };

  test('`carevault reindex` restores the answers (every current resource, once)', async () => {
    await stale();
    const report = await ok<{ partitions: number; resources: number }>(p.dataDir, 'reindex');
    assert.deepEqual(report, { partitions: 1, resources: resources.size });
    assert.equal(matchIds(await get('Observation?component-value-quantity=gt130')).length, 3);
    const history = await fhir(p, reader, 'GET', `/synthea/Observation/${observations[0]?.id}/_history`);
    assert.equal((history.json as { total?: number; entry: unknown[] }).entry.length, 1, 'no new versions');
  });

  test('`carevault serve` reindexes at start when the definitions changed', async () => {
    await stale();
    const node = await serveChild(['--data-dir', p.dataDir, '--port', String(await freePort())]);
    try {
      assert.match(node.output().stdout, /search index rebuilt/);
      assert.equal(matchIds(await get('Observation?component-value-quantity=gt130')).length, 3);
    } finally {
      await node.stop();
    }
  });
});

describe('a vault imported into a new data directory', () => {
  test('is not reindexed when the server first starts: the import built its index with these definitions', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'carevault-fresh-'));
    try {
      await ok(dir, 'partition', 'add', 'fresh');
      await ok(dir, 'import', ...files, '--partition', 'fresh');
      const node = await serveChild(['--data-dir', dir, '--port', String(await freePort())]);
      try {
        assert.doesNotMatch(node.output().stdout, /search index rebuilt/);
      } finally {
        await node.stop();
      }
      // The stamp is the current one: a later change of the definitions is still found (the test above).
      const [row] = await rawSql<{ value: string }>(dir, "SELECT value FROM store_meta WHERE key = 'search-index'");
      assert.equal(row?.value, SEARCH_INDEX_GENERATION);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('_count=0 and _summary', () => {
  test('_count=0 gives the real total and no entries', async () => {
    const b = await get('Observation?_count=0');
    assert.equal(b.total, observations.length);
    assert.equal(b.total, 144);
    assert.equal(b.entry, undefined);
  });

  test('_summary=true keeps the summary elements only, tagged SUBSETTED', async () => {
    const b = await get('Patient?_summary=true&_count=3');
    assert.equal(b.entry?.length, 3);
    for (const e of b.entry ?? []) {
      const full = resources.get(`Patient/${e.resource.id}`) as R;
      assert.ok(e.resource.meta?.tag?.some((t) => t.code === 'SUBSETTED'));
      // Patient.text, .extension, .maritalStatus, .communication are not summary elements; name, gender are.
      for (const gone of ['text', 'extension', 'maritalStatus', 'communication']) {
        assert.equal(e.resource[gone], undefined, gone);
      }
      assert.deepEqual(e.resource.name, full.name);
      assert.equal(e.resource.gender, full.gender);
      assert.equal(e.resource.birthDate, full.birthDate);
    }
  });

  test('_summary=text keeps text, id, meta and mandatory elements; _summary=data drops text', async () => {
    const text = await get('Observation?_summary=text&_count=2');
    for (const e of text.entry ?? []) {
      const full = resources.get(`Observation/${e.resource.id}`) as R;
      assert.deepEqual(
        Object.keys(e.resource).sort(),
        ['code', 'id', 'meta', 'resourceType', 'status', 'text'].filter((k) => k !== 'text' || full.text).sort(),
      );
      assert.ok(e.resource.meta?.tag?.some((t) => t.code === 'SUBSETTED'));
    }
    const data = await get('Patient?_summary=data&_count=2');
    for (const e of data.entry ?? []) {
      const full = resources.get(`Patient/${e.resource.id}`) as R;
      assert.equal(e.resource.text, undefined);
      assert.deepEqual(e.resource.extension, full.extension);
      assert.ok(e.resource.meta?.tag?.some((t) => t.code === 'SUBSETTED'));
    }
    const none = await get('Patient?_summary=false&_count=1');
    assert.equal(none.entry?.[0]?.resource.meta?.tag, undefined);
  });

  test('_summary and _elements on a read and a vread, as on a search', async () => {
    const patient = [...resources.values()].find((r) => r.resourceType === 'Patient') as R;
    const read = async (path: string, status = 200) => {
      const r = await fhir(p, reader, 'GET', `/synthea/${path}`);
      assert.equal(r.status, status, `${path}: ${r.text}`);
      return r.json as R & { meta?: { tag?: { code: string }[]; versionId?: string } };
    };
    const summary = await read(`Patient/${patient.id}?_summary=true`);
    assert.ok(summary.meta?.tag?.some((t) => t.code === 'SUBSETTED'));
    for (const gone of ['text', 'extension', 'maritalStatus', 'communication']) assert.equal(summary[gone], undefined);
    assert.deepEqual(summary.name, patient.name);
    assert.equal(summary.birthDate, patient.birthDate);
    const elements = await read(`Patient/${patient.id}/_history/1?_elements=gender,birthDate`);
    assert.deepEqual(Object.keys(elements).sort(), ['birthDate', 'gender', 'id', 'meta', 'resourceType']);
    assert.equal(elements.meta?.versionId, '1');
    const data = await read(`Patient/${patient.id}?_summary=data`);
    assert.equal(data.text, undefined);
    assert.deepEqual(data.extension, patient.extension);
    const whole = await read(`Patient/${patient.id}?_summary=false`);
    assert.deepEqual(whole.text, patient.text);
    assert.equal(whole.meta?.tag, undefined);
    for (const bad of [
      '_summary=count',
      '_summary=true&_elements=gender',
      '_elements=name.given',
      '_summary=a&_summary=b',
    ])
      await read(`Patient/${patient.id}?${bad}`, 400);
  });
});

describe('_include and _revinclude wildcards', () => {
  test('_include=Encounter:* brings every resource an Encounter refers to', async () => {
    const encounter = [...resources.values()].find((r) => r.resourceType === 'Encounter') as R;
    // Synthea refers by urn:uuid:<id> (import rewrites to Type/id); every reference of an Encounter is a search
    // parameter of Encounter (subject, participant, service-provider, location…).
    const ids = new Set(
      (JSON.stringify(encounter).match(/"reference":"[^"]+"/g) ?? []).map((r) => r.slice(13, -1).split(/[:/]/).pop()),
    );
    const expected = [...resources.entries()]
      .filter(([, r]) => ids.has(r.id))
      .map(([k]) => k)
      .sort();
    assert.ok(expected.length >= 3, expected.join());
    const b = await get(`Encounter?_id=${encounter.id}&_include=Encounter:*`);
    const included = (b.entry ?? [])
      .filter((e) => e.search.mode === 'include')
      .map((e) => `${e.resource.resourceType}/${e.resource.id}`)
      .sort();
    assert.deepEqual(included, expected);
  });

  test('_revinclude=*:* brings everything that refers to the matched Patient', async () => {
    const patient = [...resources.values()].find((r) => r.resourceType === 'Patient') as R;
    const b = await get(`Patient?_id=${patient.id}&_revinclude=*:*`);
    const included = (b.entry ?? [])
      .filter((e) => e.search.mode === 'include')
      .map((e) => `${e.resource.resourceType}/${e.resource.id}`);
    const expected = [...resources.entries()]
      .filter(([, r]) => r.resourceType !== 'Patient' && JSON.stringify(r).includes(patient.id))
      .map(([k]) => k);
    assert.deepEqual(included.sort(), expected.sort());
  });
});

describe('several conditions at once', () => {
  // One condition drives the search from its index; the others are checked on its candidates (inside its
  // subquery when they are index conditions too). Every combination must answer exactly the AND of them.
  type Obs = R & {
    subject: { reference: string };
    category: { coding: { code: string }[] }[];
    code: { coding: { code: string }[] };
    effectiveDateTime: string;
    valueQuantity?: { value: number };
  };
  const obs = observations as Obs[];
  const patientOf = (o: Obs) => o.subject.reference.split(':').pop() as string;
  const category = (o: Obs) => o.category[0]?.coding[0]?.code;
  const code = (o: Obs) => o.code.coding[0]?.code;
  const patients = [...new Set(obs.map(patientOf))].sort();
  const ids = (list: Obs[]) => list.map((o) => o.id).sort();

  test('subject with category and a negated code: every patient', async () => {
    let found = 0;
    for (const p of patients) {
      const expected = ids(
        obs.filter((o) => patientOf(o) === p && category(o) === 'laboratory' && code(o) !== '94531-1'),
      );
      const q = `Observation?subject=Patient/${p}&category=laboratory&code:not=http://loinc.org|94531-1&_count=100`;
      assert.deepEqual(matchIds(await get(q)), expected, q);
      found += expected.length;
    }
    assert.equal(found, 81);
  });

  test('two codes, a category, a value and a date on one index table and three others', async () => {
    const expected = ids(
      obs.filter(
        (o) =>
          category(o) === 'vital-signs' &&
          ['8867-4', '9279-1'].includes(code(o) as string) &&
          (o.valueQuantity?.value ?? 0) > 70 &&
          Date.parse(o.effectiveDateTime) >= Date.parse('2020-03-05'),
      ),
    );
    assert.ok(expected.length > 0 && expected.length < 18, String(expected.length));
    const b = await get(
      'Observation?category=vital-signs&code=http://loinc.org|8867-4,http://loinc.org|9279-1&value-quantity=gt70&date=ge2020-03-05&_count=100',
    );
    assert.deepEqual(matchIds(b), expected);
    assert.equal(b.total, expected.length);
  });

  test('with :missing and with only negations (conditions that cannot drive from an index)', async () => {
    const p = patients[0] as string;
    assert.deepEqual(
      matchIds(await get(`Observation?subject=Patient/${p}&value-quantity:missing=true&category=laboratory`)),
      ids(obs.filter((o) => patientOf(o) === p && !o.valueQuantity && category(o) === 'laboratory')),
    );
    const negated = ids(obs.filter((o) => code(o) !== '8867-4' && category(o) !== 'laboratory'));
    assert.equal(negated.length, 54 - 9);
    assert.deepEqual(
      matchIds(await get('Observation?code:not=http://loinc.org|8867-4&category:not=laboratory&_count=100')),
      negated,
    );
  });
});
