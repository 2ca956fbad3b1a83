import { createHash, hash as oneShotHash } from 'node:crypto';
import type { AuditCheckpoint, AuditQuery, AuditRecord, AuditVerification, ChainedEvent } from '../types.ts';
import { IndexDigest, indexKeys, searchKinds } from './audit-index.ts';
import { packCompact, renderCompact, storedEvent } from './audit-packing.ts';
import type { Sql } from './search-filter.ts';

/** The predecessor of the first event. */
export const GENESIS = '0'.repeat(64);

/**
 * Hashes are stored as 43 base64url characters (rows from before 2026-12-02: 64 hex); everywhere else —
 * hashing, the checkpoint, exports, `audit verify` — they are hex.
 */
export const storedHash = (hex: string): string => Buffer.from(hex, 'hex').toString('base64url');
export const hashHex = (stored: string): string =>
  stored.length === 64 ? stored : Buffer.from(stored, 'base64url').toString('hex');

/** audit_checkpoint's columns as an AuditCheckpoint. */
export const CHECKPOINT_COLUMNS = 'seq, hash, recorded, pruned, at';

/** One audit_events row, as both engines store it. */
export interface EventRow {
  seq: number;
  id: string;
  partition: string | null;
  recorded: number;
  type: string;
  subtype: string | null;
  action: string | null;
  outcome: string;
  request_id: string | null;
  correlation_id: string | null;
  /** The event JSON of rows written before events were packed; '' since. */
  content: string;
  /** The event JSON, packed (audit-packing.ts). */
  packed: Uint8Array | null;
  /** The predecessor's hash in rows written before 2026-12-02; '' since (the hash covers it anyway). */
  prev_hash: string;
  hash: string;
}

/** An event's columns as the hash covers them (type and subtype in full), before they are stored. */
export type EventColumns = Omit<EventRow, 'seq' | 'prev_hash' | 'hash' | 'packed' | 'content'>;

export function eventColumns(r: AuditRecord): EventColumns {
  return {
    id: r.id,
    partition: r.partition ?? null,
    recorded: Date.parse(r.recorded),
    type: r.type,
    subtype: r.subtype ?? null,
    action: r.action ?? null,
    outcome: r.outcome,
    request_id: r.requestId ?? null,
    correlation_id: r.correlationId ?? null,
  };
}

/**
 * Event type and subtype columns hold `system|code`; the systems of carevault's own events are stored as one
 * letter (no system URI is one character long, so older rows with the full system stay unambiguous). The hash
 * and the search parameters always use the full form.
 */
const SYSTEMS: Record<string, string> = {
  T: 'http://terminology.hl7.org/CodeSystem/audit-event-type',
  D: 'http://dicom.nema.org/resources/ontology/DCM',
  I: 'urn:ihe:event-type-code',
  R: 'http://hl7.org/fhir/restful-interaction',
  C: 'https://carevault.dev/fhir/CodeSystem/audit-subtype',
};
const LETTERS = new Map(Object.entries(SYSTEMS).map(([letter, system]) => [system, letter]));

export function compactCode(value: string): string {
  const bar = value.lastIndexOf('|');
  const letter = bar > 0 ? LETTERS.get(value.slice(0, bar)) : undefined;
  return letter ? `${letter}${value.slice(bar)}` : value;
}

export function expandCode(value: string): string {
  const system = value[1] === '|' ? SYSTEMS[value[0] as string] : undefined;
  return system ? `${system}${value.slice(1)}` : value;
}

/**
 * The values of one audit_events row in insert order up to its hash: (id … correlation_id, content, packed,
 * prev_hash). The predecessor's hash is not stored: verifying walks the chain in order and carries it.
 */
export function eventValues(e: EventColumns, refs: { kind: string; value: string }[], compact: string): unknown[] {
  return [
    e.id,
    e.partition,
    e.recorded,
    compactCode(e.type),
    e.subtype === null ? null : compactCode(e.subtype),
    e.action,
    e.outcome,
    e.request_id,
    e.correlation_id,
    '',
    packCompact(compact, refs, e.subtype),
    '',
  ];
}

/**
 * Beyond the columns, the hash covers an event's compact input (events written since 2026-12-03) or, before,
 * its BALP JSON.
 */
export type HashedBody = { compact: string } | { json: string };

/** What the hash of an event covers besides its predecessor and body: everything it is served and searched by. */
const hashedFields = (e: EventColumns, refs: { kind: string; value: string }[]): unknown[] => [
  e.id,
  e.partition,
  Number(e.recorded),
  e.type,
  e.subtype,
  e.action,
  e.outcome,
  e.request_id,
  e.correlation_id,
  refs.map((r) => `${r.kind}=${r.value}`).sort(),
];

/**
 * What the hash of an event with a compact input covers after its predecessor's hash: the event's hash is the
 * SHA-256 of `["<predecessor, hex>",` followed by this. The compact input follows the (self-delimiting) JSON
 * array as it is: escaping it into the array cost more than hashing. The marker covers the kind of body: a
 * compact input passed off as an event's JSON does not verify. PostgreSQL chains a group of events from their
 * tails (postgres/audit-append.ts).
 */
export function chainTail(e: EventColumns, refs: { kind: string; value: string }[], compact: string): string {
  return `${JSON.stringify([...hashedFields(e, refs), 'compact']).slice(1)}${compact}`;
}

/** An event's hash: what chainTail names, or for events from before 2026-12-03, their BALP JSON in the array. */
export function chainHash(
  prev: string,
  e: EventColumns,
  refs: { kind: string; value: string }[],
  body: HashedBody,
): string {
  if ('json' in body) {
    return createHash('sha256')
      .update(JSON.stringify([prev, ...hashedFields(e, refs), body.json]))
      .digest('hex');
  }
  // `prev` is hex, so `"${prev}"` is its JSON.
  return oneShotHash('sha256', `["${prev}",${chainTail(e, refs, body.compact)}`, 'hex');
}

/**
 * Why an event does not continue the chain that ended in `prev`. Its hash covers the predecessor's hash, so a
 * deleted or altered predecessor breaks it as surely as an altered event; rows from before 2026-12-02 also
 * store that predecessor's hash, which tells the two apart.
 */
export function chainBreak(prev: string, e: ChainedEvent): string | undefined {
  if (e.content === undefined) return 'the stored event cannot be unpacked (it was altered after it was written)';
  if (e.prevHash && e.prevHash !== prev) {
    return 'the link to the previous event is broken (an event was deleted or altered)';
  }
  const columns = hashedColumns(e);
  const body = e.compact === undefined ? { json: e.content } : { compact: e.compact };
  if (chainHash(prev, columns, e.refs, body) !== e.hash) {
    return e.prevHash
      ? 'the event was altered after it was written'
      : 'the event was altered after it was written, or the one before it was deleted or altered';
  }
  return undefined;
}

/**
 * An exported event continues the chain (chainBreak) and carries the rendered AuditEvent beside its compact
 * input, which the hash does not cover: it must be what the input renders to. A stored event needs no such
 * check — its JSON is rendered from that very input when it is read (chainedEvent), twice the work of `audit
 * verify` if compared again.
 */
export function exportedEventBreak(prev: string, e: ChainedEvent): string | undefined {
  const reason = chainBreak(prev, e);
  if (reason || e.compact === undefined) return reason;
  if (rendered(hashedColumns(e), e.compact) !== e.content) {
    return 'the event is not the one its hashed input renders (it was altered after it was written)';
  }
  return undefined;
}

/** An input that does not render (an export written by hand) is an altered event, not a crash. */
function rendered(columns: EventColumns, compact: string): string | undefined {
  try {
    return renderCompact(columns, compact);
  } catch {
    return undefined;
  }
}

/**
 * A stored row as the store interface hands it out: the JSON unpacked (undefined if it cannot be), the refs
 * from the packed event, or for rows written before refs were packed, `olderRefs` (table audit_refs).
 */
export function chainedEvent(row: EventRow, olderRefs: { kind: string; value: string }[]): ChainedEvent {
  let content: string | undefined;
  let compact: string | undefined;
  let refs = olderRefs;
  try {
    const stored = storedEvent(row);
    content = stored.json;
    compact = stored.compact;
    refs = stored.refs ?? olderRefs;
  } catch {
    content = undefined;
  }
  return {
    seq: Number(row.seq),
    id: row.id,
    partition: row.partition,
    recorded: Number(row.recorded),
    type: expandCode(row.type),
    subtype: row.subtype === null ? null : expandCode(row.subtype),
    action: row.action,
    outcome: row.outcome,
    requestId: row.request_id,
    correlationId: row.correlation_id,
    refs,
    prevHash: row.prev_hash,
    hash: hashHex(row.hash),
    content,
    ...(compact === undefined ? {} : { compact }),
  };
}

/** The columns the hash covers. */
export function hashedColumns(e: ChainedEvent): EventColumns {
  return {
    id: e.id,
    partition: e.partition,
    recorded: e.recorded,
    type: e.type,
    subtype: e.subtype,
    action: e.action,
    outcome: e.outcome,
    request_id: e.requestId,
    correlation_id: e.correlationId,
  };
}

/**
 * Walks the chain from the checkpoint (or the first event) in pages of seq order and names the first event
 * that does not continue it. Both engines read their pages their own way; the rule lives here.
 */
export async function verifyChain(
  checkpoint: AuditCheckpoint | undefined,
  page: (after: number) => Promise<ChainedEvent[]>,
  indexDigest: () => Promise<{ count: number; sum: bigint }>,
): Promise<AuditVerification> {
  let prev = checkpoint?.hash ?? GENESIS;
  let events = 0;
  let after = checkpoint?.seq ?? 0;
  const expected = new IndexDigest();
  for (;;) {
    const rows = await page(after);
    if (rows.length === 0) break;
    for (const e of rows) {
      events++;
      const reason = chainBreak(prev, e);
      if (reason) return { events, ok: false, firstBad: { seq: e.seq, id: e.id, reason } };
      expected.add(e.seq, indexKeys(e.refs));
      prev = e.hash;
      after = e.seq;
    }
  }
  const found = await indexDigest();
  const index =
    found.count === expected.count && found.sum === expected.sum
      ? undefined
      : `the search index of the trail does not match its events (${expected.count} keys expected, ${found.count} found): keys were removed (events hidden from search) or added`;
  return { events, ok: index === undefined, ...(index ? { index } : {}), ...(checkpoint ? { checkpoint } : {}) };
}

/** The WHERE clause (with `?` placeholders) of an AuditEvent search over `audit_events e`. */
export function auditWhere(q: AuditQuery): Sql {
  const where: string[] = [];
  const args: unknown[] = [];
  const refFilter = (kind: 'patient' | 'agent' | 'entity', values: string[] | undefined) => {
    if (!values?.length) return;
    const kinds = searchKinds(kind);
    where.push(
      `e.seq IN (SELECT seq FROM audit_index WHERE kind IN (${kinds.map(() => '?').join(',')}) AND value IN (${values.map(() => '?').join(',')}))`,
    );
    args.push(...kinds, ...values);
  };
  refFilter('patient', q.patient);
  refFilter('agent', q.agent);
  refFilter('entity', q.entity);
  const columnFilter = (column: string, values: string[] | undefined) => {
    if (!values?.length) return;
    // A bare code matches any system (`|code` suffix); system|code matches exactly.
    const parts = values.map((v) => (v.includes('|') ? `${column} IN (?, ?)` : `(${column} = ? OR ${column} LIKE ?)`));
    where.push(`(${parts.join(' OR ')})`);
    for (const v of values) {
      if (v.includes('|')) args.push(v, compactCode(v));
      else args.push(v, `%|${v.replace(/[%_\\]/g, '')}`);
    }
  };
  columnFilter('e.type', q.type);
  columnFilter('e.subtype', q.subtype);
  if (q.requestId !== undefined) {
    where.push('e.request_id = ?');
    args.push(q.requestId);
  }
  if (q.correlationId !== undefined) {
    where.push('e.correlation_id = ?');
    args.push(q.correlationId);
  }
  if (q.outcome?.length) {
    where.push(`e.outcome IN (${q.outcome.map(() => '?').join(',')})`);
    args.push(...q.outcome);
  }
  for (const r of q.recorded ?? []) {
    switch (r.prefix) {
      case 'gt':
      case 'sa':
        where.push('e.recorded >= ?');
        args.push(r.hi);
        break;
      case 'ge':
        where.push('e.recorded >= ?');
        args.push(r.lo);
        break;
      case 'lt':
      case 'eb':
        where.push('e.recorded < ?');
        args.push(r.lo);
        break;
      case 'le':
        where.push('e.recorded < ?');
        args.push(r.hi);
        break;
      case 'ne':
        where.push('(e.recorded < ? OR e.recorded >= ?)');
        args.push(r.lo, r.hi);
        break;
      default:
        where.push('e.recorded >= ? AND e.recorded < ?');
        args.push(r.lo, r.hi);
    }
  }
  return { sql: where.length ? `WHERE ${where.join(' AND ')}` : '', params: args };
}

/** `auditWhere` with the page's position: the count ignores it, the page starts after it. */
export function auditPageWhere(q: AuditQuery): Sql {
  const w = auditWhere(q);
  if (q.before === undefined) return w;
  return { sql: `${w.sql ? `${w.sql} AND` : 'WHERE'} e.seq < ?`, params: [...w.params, q.before] };
}
