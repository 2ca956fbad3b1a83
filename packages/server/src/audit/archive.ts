import { createReadStream, createWriteStream, existsSync, renameSync, rmSync, statSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { boundedLines, LineTooLong } from '../fhir/ndjson-lines.ts';
import { chainBreak, exportedEventBreak, GENESIS } from '../store/sql/audit-chain.ts';
import type { AuditCheckpoint, ChainedEvent, Store } from '../store/types.ts';

/**
 * Archiving the audit trail (issue 14): `export` writes the events recorded before a date to a gzipped NDJSON
 * file that proves itself (every event with the columns its hash covers, the hash it starts from and the one
 * it ends in); `prune` deletes what an export holds and leaves a checkpoint, from which `audit verify` still
 * proves the rest. The export's last hash is the checkpoint's hash: the two halves join.
 */
export const EXPORT_FORMAT = 'carevault-audit-export/2';
/**
 * Formats `verify --file` reads: 2 adds each event's compact input (`compact`), which the hashes of events
 * written since 2026-12-03 cover; a verifier that knows only 1 refuses such a file as foreign instead of
 * calling every event altered.
 */
const READABLE_FORMATS = new Set(['carevault-audit-export/1', EXPORT_FORMAT]);
const PAGE = 1000;
const EXPORTED_KEY = 'audit.exported';

export class AuditArchiveError extends Error {}

interface ChainPoint {
  seq: number;
  hash: string;
}

/** The header line of an export. */
interface ExportHeader {
  format: string;
  exported: string;
  until: string;
  /** The event before the first one in the file (seq 0 and the genesis hash when the trail starts here). */
  start: ChainPoint;
}

/** The last line of an export. */
interface ExportEnd {
  end: ChainPoint & { events: number };
}

/** What the store remembers of the newest export (audit prune refuses to delete more than was exported). */
interface ExportRecord extends ChainPoint {
  until: string;
  at: string;
  file: string;
}

export interface ExportResult {
  file: string;
  events: number;
  until: string;
  start: ChainPoint;
  end: ChainPoint;
}

/** `--until` as an instant: a date means its start (UTC); anything unparseable is refused. */
export function parseUntil(value: string): number {
  const ms = /^\d{4}-\d{2}-\d{2}$/.test(value) ? Date.parse(`${value}T00:00:00Z`) : Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(ms)) {
    throw new AuditArchiveError(
      `--until must be a date or date-time (e.g. 2026-11-01 or 2026-11-01T12:00:00Z), got "${value}"`,
    );
  }
  return ms;
}

const startOf = (checkpoint: AuditCheckpoint | undefined): ChainPoint =>
  checkpoint ? { seq: checkpoint.seq, hash: checkpoint.hash } : { seq: 0, hash: GENESIS };

/** The events after `start` up to `through`, each checked against the chain before it is handed on. */
async function* verifiedChain(store: Store, start: ChainPoint, through: number): AsyncGenerator<ChainedEvent> {
  let prev = start.hash;
  let after = start.seq;
  for (;;) {
    const page = await store.audit.chain(after, through, PAGE);
    if (page.length === 0) return;
    for (const e of page) {
      const reason = chainBreak(prev, e);
      if (reason) {
        throw new AuditArchiveError(
          `the trail does not verify at event ${e.seq} (${e.id}): ${reason}; nothing was archived (see audit verify)`,
        );
      }
      yield e;
      prev = e.hash;
      after = e.seq;
    }
  }
}

/**
 * One export line: the chained columns, the compact input the hash covers (events since 2026-12-03) and the
 * AuditEvent, both spliced in as they are (no re-serialising).
 */
function eventLine(e: ChainedEvent): string {
  const { content, compact, prevHash: _, ...columns } = e;
  const input = compact === undefined ? '' : `,"compact":${compact}`;
  return `${JSON.stringify(columns).slice(0, -1)}${input},"event":${content}}\n`;
}

export async function exportAudit(store: Store, o: { until: number; out: string }): Promise<ExportResult> {
  if (existsSync(o.out)) throw new AuditArchiveError(`${o.out} already exists; an export never overwrites a file`);
  const start = startOf(await store.audit.checkpoint());
  const through = await store.audit.prefixBefore(o.until);
  const until = new Date(o.until).toISOString();
  if (through <= start.seq) throw new AuditArchiveError(`no events recorded before ${until} to export`);
  const header: ExportHeader = { format: EXPORT_FORMAT, exported: new Date().toISOString(), until, start };
  let end = start;
  let events = 0;
  async function* lines() {
    yield `${JSON.stringify(header)}\n`;
    for await (const e of verifiedChain(store, start, through)) {
      yield eventLine(e);
      end = { seq: e.seq, hash: e.hash };
      events++;
    }
    yield `${JSON.stringify({ end: { ...end, events } } satisfies ExportEnd)}\n`;
  }
  // Written beside the target and renamed when complete: a failed export leaves no file that looks whole.
  const partial = `${o.out}.partial`;
  try {
    await pipeline(Readable.from(lines()), createGzip(), createWriteStream(partial, { flags: 'wx', mode: 0o600 }));
    renameSync(partial, o.out);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      throw new AuditArchiveError(
        `${partial} exists: another export is writing it, or one was interrupted (remove it)`,
      );
    }
    rmSync(partial, { force: true });
    if (code === 'ENOENT' || code === 'EACCES' || code === 'ENOTDIR' || code === 'EISDIR') {
      throw new AuditArchiveError(`cannot write ${o.out}: ${(err as Error).message.split(', ')[0]}`);
    }
    throw err;
  }
  const previous = await exportRecord(store);
  if (!previous || previous.seq < end.seq) {
    const record: ExportRecord = { ...end, until, at: new Date().toISOString(), file: o.out };
    await store.meta.set(EXPORTED_KEY, JSON.stringify(record));
  }
  return { file: o.out, events, until, start, end };
}

async function exportRecord(store: Store): Promise<ExportRecord | undefined> {
  const value = await store.meta.get(EXPORTED_KEY);
  return value ? (JSON.parse(value) as ExportRecord) : undefined;
}

export interface PruneResult {
  pruned: number;
  checkpoint: AuditCheckpoint | undefined;
}

/**
 * Deletes the events recorded before `until` once an export holds them (unless `withoutExport`), after checking
 * that they still verify and that the exported hash is the stored one: a trail that changed since its export
 * is not pruned.
 */
export async function pruneAudit(
  store: Store,
  o: { until: number; withoutExport?: boolean | undefined },
): Promise<PruneResult> {
  const checkpoint = await store.audit.checkpoint();
  const start = startOf(checkpoint);
  const through = await store.audit.prefixBefore(o.until);
  const until = new Date(o.until).toISOString();
  if (through <= start.seq) return { pruned: 0, checkpoint };
  const exported = o.withoutExport ? undefined : await exportRecord(store);
  if (!o.withoutExport && (!exported || exported.seq < through)) {
    throw new AuditArchiveError(
      `events recorded before ${until} have not all been exported${exported ? ` (the last export ends at event ${exported.seq}, before ${exported.until})` : ''}: run "carevault audit export --until ${until} --out <file>" first, or prune with --without-export`,
    );
  }
  let last: ChainPoint | undefined;
  for await (const e of verifiedChain(store, start, Math.max(through, exported?.seq ?? 0))) {
    if (e.seq === through) last = { seq: e.seq, hash: e.hash };
    if (exported && e.seq === exported.seq && e.hash !== exported.hash) {
      throw new AuditArchiveError(
        `event ${e.seq} is not the one exported to ${exported.file} (its hash differs); nothing was pruned`,
      );
    }
  }
  if (!last) throw new AuditArchiveError(`event ${through} disappeared while pruning; nothing was pruned`);
  const moved = await store.audit.prune(last.seq, last.hash, Date.now());
  if (!moved) throw new AuditArchiveError(`the trail changed while pruning; nothing was pruned`);
  return { pruned: moved.pruned - (checkpoint?.pruned ?? 0), checkpoint: moved };
}

export interface FileVerification {
  ok: boolean;
  events: number;
  until?: string | undefined;
  start?: ChainPoint | undefined;
  end?: ChainPoint | undefined;
  /** What is wrong and where (line numbers count from 1, the header being line 1). */
  firstBad?: { line: number; seq?: number | undefined; id?: string | undefined; reason: string } | undefined;
}

/** An exported event is a few KiB; a line past this is not one (a damaged or hostile file, a gzip bomb). */
const MAX_LINE_BYTES = 16 * 1024 * 1024;

/** Verifies an export on its own: its header, every event's hash from the start hash on, and its closing line. */
export async function verifyExport(file: string): Promise<FileVerification> {
  if (!existsSync(file)) throw new AuditArchiveError(`${file} does not exist`);
  if (!statSync(file).isFile()) throw new AuditArchiveError(`${file} is not a file`);
  const source = createReadStream(file);
  const input = source.pipe(createGunzip());
  const failure: { error?: Error } = {};
  input.on('error', (err) => {
    failure.error = err;
  });
  // pipe() does not pass the file's own read errors on: unheard, one would end the process.
  source.on('error', (err) => {
    failure.error ??= err;
    input.destroy(err);
  });
  let header: ExportHeader | undefined;
  let prev: ChainPoint | undefined;
  let closed: ExportEnd['end'] | undefined;
  let events = 0;
  let line = 0;
  const bad = (reason: string, e?: { seq?: number; id?: string }): FileVerification => ({
    ok: false,
    events,
    until: header?.until,
    start: header?.start,
    firstBad: { line, seq: e?.seq, id: e?.id, reason },
  });
  try {
    for await (const text of boundedLines(input, MAX_LINE_BYTES)) {
      line++;
      let value: Record<string, unknown>;
      try {
        value = JSON.parse(text);
      } catch {
        return bad('the line is not JSON');
      }
      if (!header) {
        if (!READABLE_FORMATS.has(value.format as string) || !isPoint(value.start)) {
          return bad(`not a carevault audit export (the first line must name ${EXPORT_FORMAT})`);
        }
        header = value as unknown as ExportHeader;
        prev = header.start;
        continue;
      }
      if (closed) return bad('there is more after the closing line');
      if ('end' in value) {
        closed = value.end as ExportEnd['end'];
        continue;
      }
      const e = exportedEvent(value);
      if (!e) return bad('the line is not an exported event');
      if (e.seq <= (prev as ChainPoint).seq) return bad('events are out of order', e);
      events++;
      const reason = exportedEventBreak((prev as ChainPoint).hash, e);
      if (reason) return bad(reason, e);
      prev = { seq: e.seq, hash: e.hash };
    }
  } catch (err) {
    if (err instanceof LineTooLong) {
      line = err.line;
      return bad(`the line is longer than ${MAX_LINE_BYTES / 1024 / 1024} MiB: no exported event is`);
    }
    failure.error ??= err as Error;
  }
  if (failure.error) return bad(`the file cannot be read to its end (${failure.error.message}): it is damaged`);
  if (!header) return bad('the file is empty');
  if (!closed) return bad('the closing line is missing: the export was cut short');
  if (!prev || closed.seq !== prev.seq || closed.hash !== prev.hash || closed.events !== events) {
    return bad('the closing line does not match the last event (events were removed or added)');
  }
  return { ok: true, events, until: header.until, start: header.start, end: { seq: prev.seq, hash: prev.hash } };
}

function isPoint(v: unknown): v is ChainPoint {
  const p = v as ChainPoint | undefined;
  return typeof p?.seq === 'number' && typeof p.hash === 'string';
}

/** An event line back as the store hands events out; the AuditEvent and the input serialised as when hashed. */
function exportedEvent(v: Record<string, unknown>): ChainedEvent | undefined {
  if (typeof v.seq !== 'number' || typeof v.id !== 'string' || typeof v.hash !== 'string') return undefined;
  if (!Array.isArray(v.refs) || typeof v.event !== 'object' || v.event === null) return undefined;
  const text = (k: string) => (typeof v[k] === 'string' ? (v[k] as string) : null);
  return {
    seq: v.seq,
    id: v.id,
    partition: text('partition'),
    recorded: Number(v.recorded),
    type: String(v.type),
    subtype: text('subtype'),
    action: text('action'),
    outcome: String(v.outcome),
    requestId: text('requestId'),
    correlationId: text('correlationId'),
    refs: v.refs as { kind: string; value: string }[],
    prevHash: '',
    hash: v.hash,
    content: JSON.stringify(v.event),
    ...(v.compact === undefined ? {} : { compact: JSON.stringify(v.compact) }),
  };
}
