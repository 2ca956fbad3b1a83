import type Database from 'better-sqlite3';
import {
  auditPageWhere,
  auditWhere,
  CHECKPOINT_COLUMNS,
  chainedEvent,
  chainHash,
  type EventRow,
  eventColumns,
  eventValues,
  GENESIS,
  hashHex,
  storedHash,
  verifyChain,
} from '../sql/audit-chain.ts';
import { IndexDigest, indexKeys } from '../sql/audit-index.ts';
import { EVENT_READ_COLUMNS, eventJson } from '../sql/audit-packing.ts';
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
  const insertKey = db.prepare('INSERT INTO audit_index (kind, value, seq) VALUES (?, ?, ?)');
  let head: string | undefined;
  const write = (r: AuditRecord) => {
    const stored = head ? undefined : (last.get() as string | null);
    const prev = head ?? (stored ? hashHex(stored) : GENESIS);
    const row = eventColumns(r);
    const hash = chainHash(prev, row, r.refs, { compact: r.compact });
    const { lastInsertRowid } = insert.run(...eventValues(row, r.refs, r.compact), storedHash(hash));
    for (const k of indexKeys(r.refs)) insertKey.run(k.kind, k.value, lastInsertRowid);
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
  const byId = db.prepare(`SELECT ${EVENT_READ_COLUMNS} FROM audit_events WHERE id = ?`);
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
  const allKeys = db.prepare('SELECT seq, kind, value FROM audit_index');
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
    if (!last || hashHex(last.hash) !== hash) return undefined;
    db.prepare('DELETE FROM audit_refs WHERE seq <= ?').run(through);
    db.prepare('DELETE FROM audit_index WHERE seq <= ?').run(through);
    const { changes } = db.prepare('DELETE FROM audit_events WHERE seq <= ?').run(through);
    const pruned = (checkpoint()?.pruned ?? 0) + changes;
    db.prepare(
      `INSERT INTO audit_checkpoint (one, seq, hash, recorded, pruned, at) VALUES (1, ?, ?, ?, ?, ?)
       ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, recorded = excluded.recorded,
         pruned = excluded.pruned, at = excluded.at`,
    ).run(last.seq, hash, last.recorded, pruned, now);
    return checkpoint();
  });
  return {
    async get(id) {
      const row = byId.get(id) as EventRow | undefined;
      return row ? eventJson(row) : undefined;
    },
    async append(records) {
      if (records.length > 0) await append(records);
    },
    async search(q) {
      const w = auditWhere(q);
      const total = !q.uncounted
        ? ((db
            .prepare(`SELECT COUNT(*) FROM audit_events e ${w.sql}`)
            .pluck()
            .get(...w.params) as number) ?? 0)
        : undefined;
      const page = auditPageWhere(q);
      const rows = db
        .prepare(
          `SELECT e.seq, ${EVENT_READ_COLUMNS} FROM audit_events e ${page.sql} ORDER BY e.seq DESC LIMIT ? OFFSET ?`,
        )
        .all(...page.params, q.limit, q.offset) as (EventRow & { seq: number })[];
      return { events: rows.map(eventJson), seqs: rows.map((r) => r.seq), total };
    },
    async verify() {
      return verifyChain(
        checkpoint(),
        async (after) => chain(after, Number.MAX_SAFE_INTEGER, 2000),
        async () => {
          const digest = new IndexDigest();
          for (const k of allKeys.iterate() as Iterable<{ seq: number; kind: string; value: string }>) {
            digest.add(k.seq, [k]);
          }
          return digest;
        },
      );
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
      // IMMEDIATE: a deferred transaction that read first could not upgrade once a server had written since.
      return prune.immediate(through, hash, now);
    },
  };
}
