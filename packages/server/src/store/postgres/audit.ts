import type pg from 'pg';
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
import { run } from './connection.ts';

/** Audit rows chained onto `head`, ready for auditCtes; returns the new head. */
export function chainRecords(head: string, records: AuditRecord[]): { params: unknown[]; head: string } {
  const cols: unknown[][] = Array.from({ length: 13 }, () => []);
  const refs: unknown[][] = [[], [], []];
  let prev = head;
  for (const r of records) {
    const row = eventColumns(r);
    const hash = chainHash(prev, row, r.refs);
    const values = eventValues(row, prev, hash);
    values.forEach((v, i) => {
      (cols[i] as unknown[]).push(v);
    });
    for (const ref of r.refs) {
      (refs[0] as unknown[]).push(row.id);
      (refs[1] as unknown[]).push(ref.kind);
      (refs[2] as unknown[]).push(ref.value);
    }
    prev = hash;
  }
  return { params: [...cols, ...refs], head: prev };
}

/**
 * CTEs that append events in chain order (identity values follow the ORDER BY of the insert) and their
 * search refs, with parameters numbered from `offset + 1`. Run only while the writer holds the write lock,
 * so no other node's event can come between.
 */
export function auditCtes(offset: number): string[] {
  const $ = (k: number) => `$${offset + k}`;
  return [
    `e AS (
  INSERT INTO audit_events (id, partition, recorded, type, subtype, action, outcome, request_id, correlation_id,
    content, packed, prev_hash, hash)
  SELECT id, partition, recorded, type, subtype, action, outcome, request_id, correlation_id, content, packed, prev_hash,
    hash
  FROM unnest(${$(1)}::text[], ${$(2)}::text[], ${$(3)}::int8[], ${$(4)}::text[], ${$(5)}::text[], ${$(6)}::text[],
    ${$(7)}::text[], ${$(8)}::text[], ${$(9)}::text[], ${$(10)}::text[], ${$(11)}::bytea[], ${$(12)}::text[],
    ${$(13)}::text[]) WITH ORDINALITY
    AS u(id, partition, recorded, type, subtype, action, outcome, request_id, correlation_id, content, packed, prev_hash,
      hash, ord)
  ORDER BY ord
  RETURNING seq, id)`,
    `er AS (INSERT INTO audit_refs (seq, kind, value)
  SELECT e.seq, r.kind, r.value FROM e JOIN unnest(${$(14)}::text[], ${$(15)}::text[], ${$(16)}::text[]) AS r(id, kind, value)
    ON r.id = e.id)`,
  ];
}

export const HEAD_SQL = 'SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1';

export function auditStore(pool: pg.Pool, append: (records: AuditRecord[]) => Promise<void>): AuditStore {
  return {
    async get(id) {
      const [row] = await run<Pick<EventRow, 'content' | 'packed'>>(
        pool,
        'SELECT content, packed FROM audit_events WHERE id = ?',
        [id],
      );
      return row ? eventJson(row) : undefined;
    },
    async append(records) {
      if (records.length > 0) await append(records);
    },
    async search(q) {
      const w = auditWhere(q);
      const [count] = await run<{ n: number }>(pool, `SELECT COUNT(*) AS n FROM audit_events e ${w.sql}`, w.params);
      const rows = await run<Pick<EventRow, 'content' | 'packed'>>(
        pool,
        `SELECT e.content, e.packed FROM audit_events e ${w.sql} ORDER BY e.seq DESC LIMIT ? OFFSET ?`,
        [...w.params, q.limit, q.offset],
      );
      return { events: rows.map(eventJson), total: Number(count?.n ?? 0) };
    },
    async verify() {
      // Walks the chain in pages by seq; writers only ever append above the highest committed seq.
      let prev = GENESIS;
      let events = 0;
      let after = 0;
      for (;;) {
        const rows = await run<EventRow & { refs: { kind: string; value: string }[] | null }>(
          pool,
          `SELECT e.*, (SELECT json_agg(json_build_object('kind', r.kind, 'value', r.value)) FROM audit_refs r
             WHERE r.seq = e.seq) AS refs FROM audit_events e WHERE e.seq > ? ORDER BY e.seq LIMIT 2000`,
          [after],
        );
        if (rows.length === 0) return { events, ok: true };
        for (const row of rows) {
          events++;
          const reason = chainBreak(prev, row, row.refs ?? []);
          if (reason) return { events, ok: false, firstBad: { seq: row.seq, id: row.id, reason } };
          prev = row.hash;
          after = row.seq;
        }
      }
    },
  };
}
