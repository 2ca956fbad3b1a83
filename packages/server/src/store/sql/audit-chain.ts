import { createHash } from 'node:crypto';
import type { AuditCheckpoint, AuditQuery, AuditRecord, AuditVerification, ChainedEvent } from '../types.ts';
import { eventJson, packEvent } from './audit-packing.ts';
import type { Sql } from './search-filter.ts';

/** The predecessor of the first event. */
export const GENESIS = '0'.repeat(64);

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

/** An event's columns with its JSON as such (what the hash covers), before it is packed for storage. */
export type EventColumns = Omit<EventRow, 'seq' | 'prev_hash' | 'hash' | 'packed'>;

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
    content: r.content,
  };
}

/**
 * The values of one audit_events row in insert order: (id … correlation_id, content, packed, prev_hash, hash).
 * The predecessor's hash is not stored: verifying walks the chain in order and carries it.
 */
export function eventValues(e: EventColumns, hash: string): unknown[] {
  return [
    e.id,
    e.partition,
    e.recorded,
    e.type,
    e.subtype,
    e.action,
    e.outcome,
    e.request_id,
    e.correlation_id,
    '',
    packEvent(e.content),
    '',
    hash,
  ];
}

/** What the hash of an event covers: everything it is served and searched by, and its predecessor. */
export function chainHash(prev: string, e: EventColumns, refs: { kind: string; value: string }[]): string {
  const sortedRefs = refs.map((r) => `${r.kind}=${r.value}`).sort();
  return createHash('sha256')
    .update(
      JSON.stringify([
        prev,
        e.id,
        e.partition,
        Number(e.recorded),
        e.type,
        e.subtype,
        e.action,
        e.outcome,
        e.request_id,
        e.correlation_id,
        sortedRefs,
        e.content,
      ]),
    )
    .digest('hex');
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
  if (chainHash(prev, hashedColumns(e, e.content), e.refs) !== e.hash) {
    return e.prevHash
      ? 'the event was altered after it was written'
      : 'the event was altered after it was written, or the one before it was deleted or altered';
  }
  return undefined;
}

/** A stored row and its refs as the store interface hands them out (the JSON unpacked; undefined if it cannot be). */
export function chainedEvent(row: EventRow, refs: { kind: string; value: string }[]): ChainedEvent {
  let content: string | undefined;
  try {
    content = eventJson(row);
  } catch {
    content = undefined;
  }
  return {
    seq: Number(row.seq),
    id: row.id,
    partition: row.partition,
    recorded: Number(row.recorded),
    type: row.type,
    subtype: row.subtype,
    action: row.action,
    outcome: row.outcome,
    requestId: row.request_id,
    correlationId: row.correlation_id,
    refs,
    prevHash: row.prev_hash,
    hash: row.hash,
    content,
  };
}

/** The columns the hash covers. */
export function hashedColumns(e: ChainedEvent, content: string): EventColumns {
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
    content,
  };
}

/**
 * Walks the chain from the checkpoint (or the first event) in pages of seq order and names the first event
 * that does not continue it. Both engines read their pages their own way; the rule lives here.
 */
export async function verifyChain(
  checkpoint: AuditCheckpoint | undefined,
  page: (after: number) => Promise<ChainedEvent[]>,
): Promise<AuditVerification> {
  let prev = checkpoint?.hash ?? GENESIS;
  let events = 0;
  let after = checkpoint?.seq ?? 0;
  for (;;) {
    const rows = await page(after);
    if (rows.length === 0) return { events, ok: true, ...(checkpoint ? { checkpoint } : {}) };
    for (const e of rows) {
      events++;
      const reason = chainBreak(prev, e);
      if (reason) return { events, ok: false, firstBad: { seq: e.seq, id: e.id, reason } };
      prev = e.hash;
      after = e.seq;
    }
  }
}

/** The WHERE clause (with `?` placeholders) of an AuditEvent search over `audit_events e`. */
export function auditWhere(q: AuditQuery): Sql {
  const where: string[] = [];
  const args: unknown[] = [];
  const refFilter = (kind: string, values: string[] | undefined) => {
    if (!values?.length) return;
    where.push(
      `e.seq IN (SELECT seq FROM audit_refs WHERE kind = ? AND value IN (${values.map(() => '?').join(',')}))`,
    );
    args.push(kind, ...values);
  };
  refFilter('patient', q.patient);
  refFilter('agent', q.agent);
  refFilter('entity', q.entity);
  const columnFilter = (column: string, values: string[] | undefined) => {
    if (!values?.length) return;
    // A bare code matches any system (`|code` suffix); system|code matches exactly.
    const parts = values.map((v) => (v.includes('|') ? `${column} = ?` : `(${column} = ? OR ${column} LIKE ?)`));
    where.push(`(${parts.join(' OR ')})`);
    for (const v of values) {
      if (v.includes('|')) args.push(v);
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
