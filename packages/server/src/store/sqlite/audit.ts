import type Database from 'better-sqlite3';
import {
  auditWhere,
  CHECKPOINT_COLUMNS,
  chainedEvent,
  chainHash,
  type EventRow,
  eventColumns,
  eventValues,
  GENESIS,
  verifyChain,
} from '../sql/audit-chain.ts';
import { eventJson } from '../sql/audit-packing.ts';
import type { AuditCheckpoint, AuditRecord, AuditStore } from '../types.ts';
import type { AuditAppender } from './resources.ts';

/** The newest hash: of the newest event, or of the checkpoint when every event was pruned. */
const HEAD = `SELECT COALESCE((SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1),
  (SELECT hash FROM audit_checkpoint))`;

/**
 * Inserts events inside the caller's open transaction, each linked to the newest one. The newest hash is
 * read once per transaction and then carried along; `reset` drops it after a rollback.
 */
export function auditWriter(db: Database.Database): AuditAppender {
  const last = db.prepare(HEAD).pluck();
  const insert = db.prepare(
    `INSERT INTO audit_events (id, partition, recorded, type, subtype, action, outcome, request_id, correlation_id,
       content, packed, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertRef = db.prepare('INSERT INTO audit_refs (seq, kind, value) VALUES (?, ?, ?)');
  let head: string | undefined;
  const write = (r: AuditRecord) => {
    const prev = head ?? (last.get() as string | null) ?? GENESIS;
    const row = eventColumns(r);
    const hash = chainHash(prev, row, r.refs);
    const { lastInsertRowid } = insert.run(...eventValues(row, hash));
    for (const ref of r.refs) insertRef.run(lastInsertRowid, ref.kind, ref.value);
    head = hash;
  };
  return {
    write,
    reset() {
      head = undefined;
    },
  };
}

export function auditStore(db: Database.Database, append: (records: AuditRecord[]) => Promise<void>): AuditStore {
  const byId = db.prepare('SELECT content, packed FROM audit_events WHERE id = ?');
  const page = db.prepare(
    `SELECT e.*, (SELECT json_group_array(json_object('kind', r.kind, 'value', r.value)) FROM audit_refs r
       WHERE r.seq = e.seq) AS refs FROM audit_events e WHERE e.seq > ? AND e.seq <= ? ORDER BY e.seq LIMIT ?`,
  );
  const prefix = db
    .prepare(
      `SELECT MAX(seq) FROM audit_events
       WHERE seq < COALESCE((SELECT MIN(seq) FROM audit_events WHERE recorded >= ?), 9223372036854775807)`,
    )
    .pluck();
  const checkpointRow = db.prepare(`SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoint`);
  const chain = (after: number, through: number, limit: number) =>
    (page.all(after, through, limit) as (EventRow & { refs: string })[]).map((row) =>
      chainedEvent(row, JSON.parse(row.refs)),
    );
  const checkpoint = () => (checkpointRow.get() as AuditCheckpoint | undefined) ?? undefined;
  const prune = db.transaction((through: number, hash: string, now: number): AuditCheckpoint | undefined => {
    const last = db.prepare('SELECT seq, hash, recorded FROM audit_events WHERE seq = ?').get(through) as
      | { seq: number; hash: string; recorded: number }
      | undefined;
    if (!last || last.hash !== hash) return undefined;
    db.prepare('DELETE FROM audit_refs WHERE seq <= ?').run(through);
    const { changes } = db.prepare('DELETE FROM audit_events WHERE seq <= ?').run(through);
    const pruned = (checkpoint()?.pruned ?? 0) + changes;
    db.prepare(
      `INSERT INTO audit_checkpoint (one, seq, hash, recorded, pruned, at) VALUES (1, ?, ?, ?, ?, ?)
       ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, recorded = excluded.recorded,
         pruned = excluded.pruned, at = excluded.at`,
    ).run(last.seq, last.hash, last.recorded, pruned, now);
    return checkpoint();
  });
  return {
    async get(id) {
      const row = byId.get(id) as Pick<EventRow, 'content' | 'packed'> | undefined;
      return row ? eventJson(row) : undefined;
    },
    async append(records) {
      if (records.length > 0) await append(records);
    },
    async search(q) {
      const w = auditWhere(q);
      const total =
        (db
          .prepare(`SELECT COUNT(*) FROM audit_events e ${w.sql}`)
          .pluck()
          .get(...w.params) as number) ?? 0;
      const rows = db
        .prepare(`SELECT e.content, e.packed FROM audit_events e ${w.sql} ORDER BY e.seq DESC LIMIT ? OFFSET ?`)
        .all(...w.params, q.limit, q.offset) as Pick<EventRow, 'content' | 'packed'>[];
      return { events: rows.map(eventJson), total };
    },
    async verify() {
      return verifyChain(checkpoint(), async (after) => chain(after, Number.MAX_SAFE_INTEGER, 2000));
    },
    async chain(after, through, limit) {
      return chain(after, through, limit);
    },
    async prefixBefore(until) {
      return (prefix.get(until) as number | null) ?? 0;
    },
    async checkpoint() {
      return checkpoint();
    },
    async prune(through, hash, now) {
      return prune(through, hash, now);
    },
  };
}
