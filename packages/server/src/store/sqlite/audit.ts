import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { AuditRecord, AuditStore } from '../types.ts';
import type { AuditAppender } from './resources.ts';

const GENESIS = '0'.repeat(64);

interface EventRow {
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
  content: string;
  prev_hash: string;
  hash: string;
}

/** What the hash of an event covers: everything it is served and searched by, and its predecessor. */
function chainHash(
  prev: string,
  e: Omit<EventRow, 'seq' | 'prev_hash' | 'hash'>,
  refs: { kind: string; value: string }[],
): string {
  const sortedRefs = refs.map((r) => `${r.kind}=${r.value}`).sort();
  return createHash('sha256')
    .update(
      JSON.stringify([
        prev,
        e.id,
        e.partition,
        e.recorded,
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
 * Inserts events inside the caller's open transaction, each linked to the newest one. The newest hash is
 * read once per transaction and then carried along; `reset` drops it after a rollback.
 */
export function auditWriter(db: Database.Database): AuditAppender {
  const last = db.prepare('SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1').pluck();
  const insert = db.prepare(
    `INSERT INTO audit_events (id, partition, recorded, type, subtype, action, outcome, request_id, correlation_id,
       content, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertRef = db.prepare('INSERT INTO audit_refs (seq, kind, value) VALUES (?, ?, ?)');
  let head: string | undefined;
  const write = (r: AuditRecord) => {
    const prev = head ?? (last.get() as string | undefined) ?? GENESIS;
    const row = {
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
    const hash = chainHash(prev, row, r.refs);
    const { lastInsertRowid } = insert.run(
      row.id,
      row.partition,
      row.recorded,
      row.type,
      row.subtype,
      row.action,
      row.outcome,
      row.request_id,
      row.correlation_id,
      row.content,
      prev,
      hash,
    );
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
  const byId = db.prepare('SELECT content FROM audit_events WHERE id = ?').pluck();
  return {
    async get(id) {
      return byId.get(id) as string | undefined;
    },
    async append(records) {
      if (records.length > 0) await append(records);
    },
    async search(q) {
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
          else args.push(v, `%|${v.replace(/[%_]/g, '')}`);
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
      const clause = where.length ? `WHERE ${where.join(' AND ')}` : '';
      const total =
        (db
          .prepare(`SELECT COUNT(*) FROM audit_events e ${clause}`)
          .pluck()
          .get(...args) as number) ?? 0;
      const events = db
        .prepare(`SELECT e.content FROM audit_events e ${clause} ORDER BY e.seq DESC LIMIT ? OFFSET ?`)
        .pluck()
        .all(...args, q.limit, q.offset) as string[];
      return { events, total };
    },
    async verify() {
      let prev = GENESIS;
      let events = 0;
      for (const row of db.prepare('SELECT * FROM audit_events ORDER BY seq').iterate() as Iterable<EventRow>) {
        events++;
        const bad = (reason: string) => ({ events, ok: false, firstBad: { seq: row.seq, id: row.id, reason } });
        if (row.prev_hash !== prev)
          return bad('the link to the previous event is broken (an event was deleted or altered)');
        const refs = refsOf.all(row.seq) as { kind: string; value: string }[];
        if (chainHash(prev, row, refs) !== row.hash) return bad('the event was altered after it was written');
        prev = row.hash;
      }
      return { events, ok: true };
    },
  };
}
