import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { importCommand } from '../src/admin/import.ts';
import { loadConfig } from '../src/config/index.ts';
import { openStore } from '../src/store/index.ts';
import { addPartition, VaultInputError } from '../src/vault/partitions.ts';
import { type Caller, fhir, grantedClient, partition } from './helpers/fhir.ts';
import { startPlatform, storeEnv, TEST_STORE, type TestPlatform } from './helpers/platform.ts';
import { rawSql } from './helpers/raw-db.ts';

// `carevault import` with the vendored Synthea data; counts are the ones recorded in fixtures/README.md.
const DATA = fileURLToPath(new URL('../../../fixtures/', import.meta.url));
const synthea = readdirSync(join(DATA, 'synthea'))
  .filter((f) => f.endsWith('.json'))
  .map((f) => join(DATA, 'synthea', f));
const ndjson = readdirSync(join(DATA, 'bulk-ndjson'))
  .filter((f) => f.endsWith('.ndjson'))
  .map((f) => join(DATA, 'bulk-ndjson', f));

let p: TestPlatform;
let reader: Caller;

async function total(vault: string, query: string): Promise<number> {
  const r = await fhir(p, reader, 'GET', `/${vault}/${query}${query.includes('?') ? '&' : '?'}_summary=count`);
  assert.equal(r.status, 200, r.text);
  return (r.json as { total: number }).total;
}

before(async () => {
  p = await startPlatform();
  await partition(p, 'synthea');
  await partition(p, 'bulk');
  reader = await grantedClient(p, 'import-reader', 'system/*.rs', ['synthea', 'bulk']);
});
after(() => p.stop());

describe('import of the Synthea Bundles (batch → transaction, urn:uuid references)', () => {
  test('loads all 12 files and reports what it wrote', async () => {
    assert.equal(synthea.length, 12);
    const report = await importCommand(p.config, synthea, 'synthea');
    assert.equal(report.files, 12);
    assert.equal(
      report.total,
      1000,
      'every entry was written (embedded Organization/Practitioner copies update the shared ones)',
    );
  });

  test('the vault holds exactly the resources the data README lists (962)', async () => {
    const expected: Record<string, number> = {
      Patient: 10,
      Organization: 17,
      Practitioner: 17,
      Encounter: 139,
      Immunization: 242,
      Claim: 139,
      ExplanationOfBenefit: 139,
      Condition: 54,
      Observation: 144,
      Procedure: 9,
      DiagnosticReport: 18,
      CareTeam: 17,
      CarePlan: 17,
    };
    let sum = 0;
    for (const [type, n] of Object.entries(expected)) {
      assert.equal(await total('synthea', type), n, type);
      sum += n;
    }
    assert.equal(sum, 962);
  });

  test('the README facts hold through search', async () => {
    assert.equal(await total('synthea', 'Observation?code=http://loinc.org|8302-2'), 0);
    assert.equal(await total('synthea', 'Observation?code=http://loinc.org|29463-7'), 9);
    assert.equal(await total('synthea', 'Observation?code=http://loinc.org|94531-1'), 9);
    assert.equal(await total('synthea', 'Condition?clinical-status=active'), 2);
    assert.equal(
      await total('synthea', 'Condition?clinical-status=active&patient=5a67c244-3dae-770c-1a41-85790f73b1b1'),
      2,
    );
    assert.equal(await total('synthea', 'Encounter?patient=Patient/6a93e0ad-9bd0-6d85-34a7-015186f7880a'), 18);
    const r = await fhir(
      p,
      reader,
      'GET',
      '/synthea/Observation?patient=6a93e0ad-9bd0-6d85-34a7-015186f7880a&_count=1',
    );
    const obs = (r.json as { entry: { resource: { subject: { reference: string } } }[] }).entry[0]?.resource;
    assert.equal(
      obs?.subject.reference,
      'Patient/6a93e0ad-9bd0-6d85-34a7-015186f7880a',
      'urn:uuid references were rewritten',
    );
  });
});

describe('import of Bulk Data NDJSON (conditional references resolved after their targets)', () => {
  test('loads all 13 files, 7,160 resources', async () => {
    const report = await importCommand(p.config, ndjson, 'bulk');
    assert.equal(report.total, 7160);
    const expected: Record<string, number> = {
      AllergyIntolerance: 11,
      Condition: 555,
      Device: 16,
      DocumentReference: 1215,
      Encounter: 1215,
      Immunization: 161,
      Location: 44,
      MedicationRequest: 1745,
      Organization: 43,
      Patient: 13,
      Practitioner: 43,
      PractitionerRole: 43,
      Procedure: 2056,
    };
    for (const [type, n] of Object.entries(expected)) assert.equal(await total('bulk', type), n, type);
    const enc = await fhir(p, reader, 'GET', '/bulk/Encounter?_count=1');
    const participant = (
      enc.json as { entry: { resource: { participant?: { individual?: { reference: string } }[] } }[] }
    ).entry[0]?.resource.participant?.[0];
    assert.match(
      participant?.individual?.reference ?? '',
      /^Practitioner\/[0-9a-f-]+$/,
      'Practitioner?identifier=… became Practitioner/<id>',
    );
  });

  test('with no server running, it leaves the planner statistics of what it loaded', async () => {
    // PostgreSQL kept planning the import's lookups with the statistics of the empty tables it began on:
    // 75 resources/s after 130,000 of them. The server refreshes statistics as it goes; an import must too.
    const dataDir = mkdtempSync(join(tmpdir(), 'carevault-import-'));
    try {
      const config = loadConfig({ dataDir, logLevel: 'silent' }, storeEnv(dataDir));
      const store = await openStore({ dataDir, databaseUrl: config.databaseUrl });
      await addPartition(store, 'quiet');
      await store.close();
      await importCommand(config, ndjson, 'quiet');
      if (TEST_STORE === 'postgres') {
        const [row] = await rawSql<{ last_analyze: Date | null; reltuples: number }>(
          dataDir,
          `SELECT s.last_analyze, c.reltuples FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
             WHERE s.relname = 'resources' AND s.schemaname = current_schema()`,
        );
        assert.ok(row?.last_analyze, 'the resources table was analyzed');
        assert.ok(Number(row?.reltuples) >= 7000, `planned for ${row?.reltuples} rows`);
      } else {
        const [row] = await rawSql<{ stat: string }>(
          dataDir,
          "SELECT stat FROM sqlite_stat1 WHERE tbl = 'resources' AND idx = 'resources_type_time'",
        );
        assert.ok(Number(row?.stat.split(' ')[0]) >= 7000, `planned for ${row?.stat}`);
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test('Bundles past what the first pass keeps (32 MiB) are read again at their turn, whole', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'carevault-import-large-'));
    try {
      // A small Bundle that is kept, then one of ≈ 36 MB that is not: 45 Binaries of 800 KB.
      const binary = (n: number) => ({
        resourceType: 'Binary',
        id: `large-${n}`,
        contentType: 'application/octet-stream',
        data: Buffer.alloc(600_000, n).toString('base64'),
      });
      const bundle = (ids: number[]) => ({
        resourceType: 'Bundle',
        type: 'batch',
        entry: ids.map((n) => ({ resource: binary(n), request: { method: 'PUT', url: `Binary/large-${n}` } })),
      });
      writeFileSync(join(dir, 'a-small.json'), JSON.stringify(bundle([0])));
      writeFileSync(join(dir, 'b-large.json'), JSON.stringify(bundle(Array.from({ length: 45 }, (_, i) => i + 1))));
      const report = await importCommand(p.config, [join(dir, 'a-small.json'), join(dir, 'b-large.json')], 'bulk');
      assert.deepEqual(report.written, { Binary: 46 });
      assert.equal(await total('bulk', 'Binary'), 46);
      const last = await fhir(p, reader, 'GET', '/bulk/Binary/large-45');
      assert.equal((last.json as { data: string }).data, binary(45).data);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('bad input names the file and stops', async () => {
    await assert.rejects(importCommand(p.config, [join(DATA, 'README.md')], 'bulk'), /not valid JSON/);
    await assert.rejects(importCommand(p.config, synthea.slice(0, 1), 'no-such-vault'), /not found/);
    await assert.rejects(importCommand(p.config, ['/nonexistent.ndjson'], 'bulk'), /file not found/);
    // A Bundle file too large to parse as one string is refused by its size, before it is read.
    const dir = mkdtempSync(join(tmpdir(), 'carevault-import-huge-'));
    try {
      const huge = join(dir, 'huge.json');
      writeFileSync(huge, '{"resourceType":"Bundle"');
      truncateSync(huge, 600 * 1024 * 1024);
      await assert.rejects(
        importCommand(p.config, [huge], 'bulk'),
        (err: Error) =>
          err instanceof VaultInputError && /huge\.json: 600 MiB is more than one Bundle file may be/.test(err.message),
      );
      // What an HTTP body may not hold, a file may not either: a key every JavaScript object has (stored before as an
      // element of the resource), or nesting past 100 levels (the stack of the code that walks it).
      const proto = join(dir, 'Patient.proto.ndjson');
      writeFileSync(
        proto,
        `${JSON.stringify({ resourceType: 'Patient', id: 'ok' })}\n{"resourceType":"Patient","toString":{}}\n`,
      );
      await assert.rejects(
        importCommand(p.config, [proto], 'bulk'),
        /Patient\.proto\.ndjson:2: the line contains the key "toString"/,
      );
      const deep = join(dir, 'deep.json');
      writeFileSync(deep, `{"resourceType":"Bundle","type":"collection","x":${'['.repeat(150)}${']'.repeat(150)}}`);
      await assert.rejects(
        importCommand(p.config, [deep], 'bulk'),
        /deep\.json: the file nests deeper than 100 levels/,
      );
      // An NDJSON line is refused past 64 MiB (a file without line ends), by its number, before it is held whole.
      const endless = join(dir, 'Patient.endless.ndjson');
      writeFileSync(
        endless,
        `${JSON.stringify({ resourceType: 'Patient', id: 'before-endless' })}\n{"resourceType":"Patient"`,
      );
      truncateSync(endless, 65 * 1024 * 1024);
      await assert.rejects(
        importCommand(p.config, [endless], 'bulk'),
        (err: Error) =>
          err instanceof VaultInputError &&
          /Patient\.endless\.ndjson:2: a line is longer than 64 MiB/.test(err.message),
      );
      assert.equal((await fhir(p, reader, 'GET', '/bulk/Patient/before-endless')).status, 404);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a file of the wrong shape (null, entries that are not objects, an NDJSON line that is not a resource) is refused by name, not a crash', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'carevault-import-shape-'));
    try {
      const patient = { resourceType: 'Patient', id: 'shape-1' };
      const files: [string, string, RegExp][] = [
        ['null.json', 'null', /null\.json: expected a Bundle/],
        ['entry-number.json', JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: 5 }), /must be an array/],
        [
          'entry-null.json',
          JSON.stringify({
            resourceType: 'Bundle',
            type: 'batch',
            entry: [{ resource: patient, request: { method: 'POST', url: 'Patient' } }, null],
          }),
          /entry-null\.json: entry\[1\]: not an object/,
        ],
        ['lines.ndjson', `${JSON.stringify(patient)}\nnull\n`, /lines\.ndjson:2: not a resource/],
      ];
      for (const [name, text, message] of files) {
        writeFileSync(join(dir, name), text);
        await assert.rejects(
          importCommand(p.config, [join(dir, name)], 'bulk'),
          (err: Error) => err instanceof VaultInputError && message.test(err.message),
          name,
        );
      }
      // Each file is one transaction: the good entry before the bad one was not written either.
      assert.equal((await fhir(p, reader, 'GET', '/bulk/Patient/shape-1')).status, 404);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
