import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { MIGRATIONS as PG_MIGRATIONS } from '../src/store/postgres/schema.ts';
import { chainHash, expandCode } from '../src/store/sql/audit-chain.ts';
import { type PackedColumns, unpackEvent } from '../src/store/sql/audit-packing.ts';
import { MIGRATIONS } from '../src/store/sqlite/schema.ts';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';
import { rawSql } from './helpers/raw-db.ts';
import { TEST_STORE } from './helpers/store.ts';
import { cli, ok } from './helpers/zorgviewer.ts';

// Issue 14 §2: `carevault audit export --until`, `audit prune --until` (with a checkpoint from which `audit verify`
// still proves the rest) and `audit verify --file` (an export proves itself), on both stores.

let p: TestPlatform;
let tmp: string;
let reader: Caller;
const vault = 'archive';

interface Point {
  seq: number;
  hash: string;
}
interface Exported {
  file: string;
  events: number;
  until: string;
  start: Point;
  end: Point;
}
interface Verified {
  ok: boolean;
  events: number;
  start?: Point;
  end?: Point;
  checkpoint?: Point & { pruned: number };
  firstBad?: { line?: number; seq?: number; reason: string };
}

/** A few audited accesses: a create and reads. */
async function traffic(reads: number): Promise<void> {
  const created = await fhir(p, reader, 'POST', `/${vault}/Patient`, { resourceType: 'Patient', gender: 'other' });
  assert.equal(created.status, 201);
  const id = created.json.id as string;
  for (let i = 0; i < reads; i++) assert.equal((await fhir(p, reader, 'GET', `/${vault}/Patient/${id}`)).status, 200);
}

/** A moment between what was recorded so far and what comes next. */
async function boundary(): Promise<string> {
  await new Promise((r) => setTimeout(r, 5));
  const at = new Date().toISOString();
  await new Promise((r) => setTimeout(r, 5));
  return at;
}

const lines = (file: string) => gunzipSync(readFileSync(file)).toString('utf8').trimEnd().split('\n');
const rewrite = (file: string, out: string, edit: (lines: string[]) => string[]) =>
  writeFileSync(out, gzipSync(`${edit(lines(file)).join('\n')}\n`));
const countEvents = async () =>
  Number((await rawSql<{ n: number }>(p.dataDir, 'SELECT COUNT(*) AS n FROM audit_events'))[0]?.n);

before(async () => {
  p = await startPlatform();
  tmp = mkdtempSync(join(tmpdir(), 'carevault-archive-'));
  await partition(p, vault);
  reader = await secretClient(p, 'archive-reader', 'system/*.cruds');
  await grant(p, { partition: vault, client: 'archive-reader', scope: 'system/*.cruds' });
});
after(async () => {
  await p.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe('audit export, prune and verify --file', () => {
  let first: Exported;
  let firstUntil: string;

  test('export writes the events before --until to a file that verifies on its own', async () => {
    await traffic(5);
    firstUntil = await boundary();
    await traffic(3);
    const before = await countEvents();
    first = await ok<Exported>(p.dataDir, 'audit', 'export', '--until', firstUntil, '--out', join(tmp, 'a.ndjson.gz'));
    assert.equal(first.start.seq, 0);
    assert.ok(first.events >= 6, `${first.events} events`);
    assert.equal(first.until, firstUntil);
    // The file holds exactly the events recorded before --until, each with the BALP AuditEvent itself.
    const [header, ...rest] = lines(first.file);
    const events = rest.slice(0, -1).map((l) => JSON.parse(l));
    assert.equal(JSON.parse(header as string).format, 'carevault-audit-export/2');
    assert.equal(events.length, first.events);
    assert.ok(events.every((e) => e.event.resourceType === 'AuditEvent' && e.event.recorded < firstUntil));
    assert.ok(events.some((e) => e.event.subtype?.[0]?.code === 'read' && e.refs.length > 0));
    assert.deepEqual(JSON.parse(rest.at(-1) as string).end, { ...first.end, events: first.events });
    assert.equal(statSync(first.file).mode & 0o777, 0o600, 'the export holds personal data: owner only');
    // Exporting reads the trail: that is an event of its own; nothing was deleted.
    assert.equal(await countEvents(), before + 1);
    const verified = await ok<Verified>(p.dataDir, 'audit', 'verify', '--file', first.file);
    assert.deepEqual(verified, {
      ok: true,
      events: first.events,
      until: firstUntil,
      start: first.start,
      end: first.end,
    });
  });

  test('an export never overwrites a file, and says when there is nothing before --until', async () => {
    const again = await cli(p.dataDir, 'audit', 'export', '--until', firstUntil, '--out', first.file);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^error: .*already exists; an export never overwrites a file\n$/);
    const empty = await cli(p.dataDir, 'audit', 'export', '--until', '2001-01-01', '--out', join(tmp, 'x.gz'));
    assert.match(empty.stderr, /^error: no events recorded before 2001-01-01T00:00:00.000Z to export\n$/);
    const bad = await cli(p.dataDir, 'audit', 'export', '--until', 'yesterday', '--out', join(tmp, 'x.gz'));
    assert.match(bad.stderr, /^error: --until must be a date or date-time/);
    assert.equal(existsSync(join(tmp, 'x.gz')), false);
    const nowhere = await cli(p.dataDir, 'audit', 'export', '--until', firstUntil, '--out', join(tmp, 'no', 'x.gz'));
    assert.match(nowhere.stderr, /^error: cannot write .*x\.gz: ENOENT: no such file or directory\n$/);
    writeFileSync(join(tmp, 'y.gz.partial'), '');
    const stale = await cli(p.dataDir, 'audit', 'export', '--until', firstUntil, '--out', join(tmp, 'y.gz'));
    assert.match(stale.stderr, /^error: .*y\.gz\.partial exists: another export is writing it, or one was interrupted/);
    assert.equal(existsSync(join(tmp, 'y.gz')), false);
  });

  test('a tampered, cut, reordered or foreign export is refused, naming the line', async () => {
    const bad = async (name: string, edit: (l: string[]) => string[]) => {
      const file = join(tmp, name);
      rewrite(first.file, file, edit);
      const r = await cli(p.dataDir, 'audit', 'verify', '--file', file);
      assert.equal(r.code, 1, name);
      return JSON.parse(r.stdout) as Verified;
    };
    const outcome = await bad('outcome.gz', (l) =>
      l.map((x, i) => (i === 3 ? x.replace('"outcome":"0"', '"outcome":"4"') : x)),
    );
    assert.equal(outcome.firstBad?.line, 4);
    assert.match(outcome.firstBad?.reason ?? '', /altered/);
    // Each line carries the compact input the hash covers and the AuditEvent rendered from it: neither can be
    // changed alone.
    const input = await bad('input.gz', (l) =>
      l.map((x, i) => (i === 3 ? x.replace(/"compact":(.*)"observer":"https:/, '"compact":$1"observer":"http:') : x)),
    );
    assert.equal(input.firstBad?.line, 4);
    assert.match(input.firstBad?.reason ?? '', /altered after it was written/);
    const rendered = await bad('rendered.gz', (l) =>
      l.map((x, i) => (i === 3 ? x.replace(/("event":.*"display":)"carevault"/, '$1"intruder"') : x)),
    );
    assert.equal(rendered.firstBad?.line, 4);
    assert.match(rendered.firstBad?.reason ?? '', /not the one its hashed input renders/);
    const refs = await bad('refs.gz', (l) =>
      l.map((x, i) => (i === 2 ? x.replace(/"refs":\[[^\]]*\]/, '"refs":[]') : x)),
    );
    assert.equal(refs.firstBad?.line, 3);
    const dropped = await bad('dropped.gz', (l) => l.filter((_, i) => i !== 2));
    assert.equal(dropped.firstBad?.line, 3);
    assert.match(dropped.firstBad?.reason ?? '', /deleted/);
    const cut = await bad('cut.gz', (l) => l.slice(0, -1));
    assert.match(cut.firstBad?.reason ?? '', /closing line is missing/);
    const tail = await bad('tail.gz', (l) => l.slice(0, -2).concat(l.slice(-1)));
    assert.match(tail.firstBad?.reason ?? '', /closing line does not match/);
    const swapped = await bad('swapped.gz', (l) => [l[0] as string, l[2] as string, l[1] as string, ...l.slice(3)]);
    assert.equal(swapped.firstBad?.line, 2);
    const twice = await bad('twice.gz', (l) => [l[0] as string, l[1] as string, ...l.slice(1)]);
    assert.equal(twice.firstBad?.line, 3);
    assert.match(twice.firstBad?.reason ?? '', /out of order/);
    const foreign = await bad('foreign.gz', (l) => [JSON.stringify({ resourceType: 'Bundle' }), ...l.slice(1)]);
    assert.match(foreign.firstBad?.reason ?? '', /not a carevault audit export/);
    // Not gzip at all, or a gzip stream cut in the middle.
    writeFileSync(join(tmp, 'plain.gz'), readFileSync(first.file).subarray(0, 40));
    const damaged = await cli(p.dataDir, 'audit', 'verify', '--file', join(tmp, 'plain.gz'));
    assert.equal(damaged.code, 1);
    assert.match((JSON.parse(damaged.stdout) as Verified).firstBad?.reason ?? '', /damaged|cut short/);
    // A small file that inflates to one endless line (a gzip bomb) is refused at that line, not held in memory.
    const header = gunzipSync(readFileSync(first.file)).toString().split('\n')[0] as string;
    writeFileSync(join(tmp, 'bomb.gz'), gzipSync(`${header}\n${'x'.repeat(17 * 1024 * 1024)}`));
    const bomb = await cli(p.dataDir, 'audit', 'verify', '--file', join(tmp, 'bomb.gz'));
    assert.equal(bomb.code, 1);
    const bombed = (JSON.parse(bomb.stdout) as Verified).firstBad;
    assert.equal(bombed?.line, 2);
    assert.match(bombed?.reason ?? '', /longer than 16 MiB/);
    const missing = await cli(p.dataDir, 'audit', 'verify', '--file', join(tmp, 'nope.gz'));
    assert.match(missing.stderr, /^error: .*nope\.gz does not exist\n$/);
    // A directory ended the process with an unheard stream error (and a stack trace).
    const directory = await cli(p.dataDir, 'audit', 'verify', '--file', tmp);
    assert.equal(directory.code, 1);
    assert.match(directory.stderr, /^error: .* is not a file\n$/);
  });

  test('prune refuses what no export holds; after the export it leaves a checkpoint the rest verifies from', async () => {
    const later = await boundary();
    const refused = await cli(p.dataDir, 'audit', 'prune', '--until', later);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /have not all been exported \(the last export ends at event \d+/);
    const before = await countEvents();
    const pruned = await ok<{ pruned: number; checkpoint: Point & { pruned: number } }>(
      p.dataDir,
      'audit',
      'prune',
      '--until',
      firstUntil,
    );
    assert.equal(pruned.pruned, first.events);
    // The checkpoint is the export's last event: the export and the remaining trail join.
    assert.equal(pruned.checkpoint.seq, first.end.seq);
    assert.equal(pruned.checkpoint.hash, first.end.hash);
    assert.equal(await countEvents(), before - first.events + 1, 'the pruned events are gone; the prune is recorded');
    const [oldest] = await rawSql<{ seq: number }>(p.dataDir, 'SELECT MIN(seq) AS seq FROM audit_events');
    assert.ok(Number(oldest?.seq) > first.end.seq);
    const verified = await ok<Verified>(p.dataDir, 'audit', 'verify');
    assert.equal(verified.ok, true);
    assert.equal(verified.events, before - first.events + 1);
    assert.equal(verified.checkpoint?.hash, first.end.hash);
    // Pruning the same range again has nothing to do.
    assert.equal((await ok<{ pruned: number }>(p.dataDir, 'audit', 'prune', '--until', firstUntil)).pruned, 0);
    // The prune and the export are in the trail, as DICOM 110101 Audit Log Used.
    const used = await p.store.audit.search({ type: ['110101'], limit: 10, offset: 0 });
    const descs = used.events.map((e) => JSON.parse(e).outcomeDesc as string);
    assert.ok(
      descs.some((d) => /^\d+ events up to \d+ pruned$/.test(d)),
      descs.join('; '),
    );
    assert.ok(
      descs.some((d) => /exported to .*a\.ndjson\.gz$/.test(d)),
      descs.join('; '),
    );
  });

  test('the next export starts where the first ended; new events chain on after a prune of everything', async () => {
    await traffic(2);
    const until = await boundary();
    const second = await ok<Exported>(
      p.dataDir,
      'audit',
      'export',
      '--until',
      until,
      '--out',
      join(tmp, 'b.ndjson.gz'),
    );
    assert.deepEqual(second.start, first.end);
    assert.equal((await ok<Verified>(p.dataDir, 'audit', 'verify', '--file', second.file)).ok, true);
    await ok(p.dataDir, 'audit', 'prune', '--until', until);
    // Everything up to now, without export: the checkpoint carries the chain when no event is left.
    const all = await ok<{ pruned: number }>(
      p.dataDir,
      'audit',
      'prune',
      '--until',
      new Date(Date.now() + 60_000).toISOString(),
      '--without-export',
    );
    assert.ok(all.pruned > 0);
    await traffic(2);
    const verified = await ok<Verified>(p.dataDir, 'audit', 'verify');
    assert.equal(verified.ok, true);
    assert.ok(verified.events >= 3);
  });

  test('a trail stored before refs were packed (hex hashes, JSON rows, audit_refs) is upgraded and verifies', async () => {
    await traffic(2);
    // Turn every row back into the form of 2026-12-01, and the schema with it.
    const rows = await rawSql<
      PackedColumns & {
        seq: number;
        packed: Uint8Array;
        type: string;
        subtype: string | null;
        partition: string | null;
        action: string | null;
        outcome: string;
      }
    >(
      p.dataDir,
      `SELECT seq, packed, id, recorded, request_id, correlation_id, type, subtype, partition, action, outcome
       FROM audit_events ORDER BY seq`,
    );
    const [checkpoint] = await rawSql<{ hash: string }>(p.dataDir, 'SELECT hash FROM audit_checkpoint');
    let prev = checkpoint?.hash ?? '0'.repeat(64);
    let patient: string | undefined;
    let patientRefs = 0;
    for (const row of rows) {
      // Then, the hash covered the event's JSON.
      const { json, refs } = unpackEvent(row.packed, row);
      const columns = { ...row, type: expandCode(row.type), subtype: row.subtype && expandCode(row.subtype) };
      const hash = chainHash(prev, columns, refs ?? [], { json });
      await rawSql(
        p.dataDir,
        'UPDATE audit_events SET content = ?, packed = NULL, type = ?, subtype = ?, prev_hash = ?, hash = ? WHERE seq = ?',
        [json, columns.type, columns.subtype, prev, hash, row.seq],
      );
      for (const r of refs ?? []) {
        await rawSql(p.dataDir, 'INSERT INTO audit_refs (seq, kind, value) VALUES (?, ?, ?)', [
          row.seq,
          r.kind,
          r.value,
        ]);
        if (r.kind !== 'patient') continue;
        patient ??= r.value;
        if (r.value === patient) patientRefs++;
      }
      prev = hash;
    }
    assert.ok(patientRefs > 0);
    await rawSql(p.dataDir, 'DROP TABLE audit_index');
    await rawSql(p.dataDir, 'CREATE INDEX audit_refs_value ON audit_refs (kind, value, seq)');
    // Back to before the migration that made audit_index (the later ones are idempotent and run again).
    const auditIndexMigration = MIGRATIONS.findIndex(
      (m) => typeof m === 'string' && m.includes('CREATE TABLE IF NOT EXISTS audit_index'),
    );
    if (TEST_STORE === 'sqlite') await rawSql(p.dataDir, `PRAGMA user_version = ${auditIndexMigration}`);
    else {
      const version = PG_MIGRATIONS.find((m) => m.sql.includes('CREATE TABLE audit_index'))?.version;
      await rawSql(p.dataDir, 'DELETE FROM schema_migrations WHERE version = ?', [version]);
    }
    // The next command that opens the store migrates it: the old trail verifies, index included.
    const verified = await ok<Verified>(p.dataDir, 'audit', 'verify');
    assert.equal(verified.ok, true, JSON.stringify(verified));
    assert.equal(verified.events, rows.length);
    if (!patient) assert.fail('the traffic above is about patients');
    const byPatient = await p.store.audit.search({ patient: [patient], limit: 1000, offset: 0 });
    const byEntity = await p.store.audit.search({ entity: [patient], limit: 1000, offset: 0 });
    assert.equal(byPatient.total, patientRefs, 'every old event about the patient is found by patient');
    assert.ok(
      Number(byEntity.total) > 0 && Number(byEntity.total) <= Number(byPatient.total),
      'the Patient reads are found by entity',
    );
    // New events chain on after the old ones.
    await traffic(1);
    assert.equal((await ok<Verified>(p.dataDir, 'audit', 'verify')).ok, true);
  });

  test('a trail that does not verify is neither exported nor pruned', async () => {
    await traffic(2);
    const until = await boundary();
    const [row] = await rawSql<{ seq: number }>(p.dataDir, 'SELECT MAX(seq) AS seq FROM audit_events');
    const victim = Number(row?.seq) - 1;
    await rawSql(p.dataDir, 'UPDATE audit_events SET outcome = ? WHERE seq = ?', ['8', victim]);
    const out = join(tmp, 'c.ndjson.gz');
    const exported = await cli(p.dataDir, 'audit', 'export', '--until', until, '--out', out);
    assert.equal(exported.code, 1);
    assert.match(
      exported.stderr,
      new RegExp(`^error: the trail does not verify at event ${victim} .*nothing was archived`),
    );
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.partial`), false);
    const before = await countEvents();
    const pruned = await cli(p.dataDir, 'audit', 'prune', '--until', until, '--without-export');
    assert.match(pruned.stderr, /does not verify/);
    assert.equal(await countEvents(), before);
  });
});
