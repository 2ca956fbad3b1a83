import type Database from 'better-sqlite3';
import {
  auditWhere,
  chainBreak,
  chainHash,
  type EventRow,
  eventColumns,
  eventValues,
  GENESIS,
} from '../sql/audit-chain.ts';
import { eventJson } from '../sql/audit-packing.ts';
import type { AuditRecord, AuditStore } from '../types.ts';
import type { AuditAppender } from './resources.ts';

/**
 * Inserts events inside the caller's open transaction, each linked to the newest one. The newest hash is
 * read once per transaction and then carried along; `reset` drops it after a rollback.
 */
export function auditWriter(db: Database.Database): AuditAppender {
  const last = db.prepare('SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1').pluck();
  const insert = db.prepare(
    `INSERT INTO audit_events (id, partition, recorded, type, subtype, action, outcome, request_id, correlation_id,
       content, packed, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertRef = db.prepare('INSERT INTO audit_refs (seq, kind, value) VALUES (?, ?, ?)');
  let head: string | undefined;
  const write = (r: AuditRecord) => {
    const prev = head ?? (last.get() as string | undefined) ?? GENESIS;
    const row = eventColumns(r);
    const hash = chainHash(prev, row, r.refs);
    const { lastInsertRowid } = insert.run(...eventValues(row, prev, hash));
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
  const refsOf = db.prepare('SELECT kind, value FROM audit_refs WHERE seq = ?');
  const byId = db.prepare('SELECT content, packed FROM audit_events WHERE id = ?');
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
      let prev = GENESIS;
      let events = 0;
      for (const row of db.prepare('SELECT * FROM audit_events ORDER BY seq').iterate() as Iterable<EventRow>) {
        events++;
        const reason = chainBreak(prev, row, refsOf.all(row.seq) as { kind: string; value: string }[]);
        if (reason) return { events, ok: false, firstBad: { seq: row.seq, id: row.id, reason } };
        prev = row.hash;
      }
      return { events, ok: true };
    },
  };
}
