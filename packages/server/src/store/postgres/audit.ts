import type pg from 'pg';
import {
  auditPageWhere,
  auditWhere,
  CHECKPOINT_COLUMNS,
  chainedEvent,
  chainHash,
  chainTail,
  type EventColumns,
  type EventRow,
  eventColumns,
  eventValues,
  GENESIS,
  hashHex,
  storedHash,
  verifyChain,
} from '../sql/audit-chain.ts';
import { indexKeys } from '../sql/audit-index.ts';
import { EVENT_READ_COLUMNS, eventJson } from '../sql/audit-packing.ts';
import type { AuditCheckpoint, AuditRecord, AuditStore, ChainedEvent } from '../types.ts';
import { checkout, rethrow, run } from './connection.ts';
import { LOCK_WRITE } from './migrate.ts';

/** The chain's head as stored (newest event, else the checkpoint), or the genesis hash when there is neither. */
export const HEAD_STORED = `COALESCE((SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1), (SELECT hash FROM audit_checkpoint),
  '${GENESIS}')`;

/** Audit rows for auditCtes: each event's last column is its hash (stored form) or, `chain: 'database'`, its tail. */
function auditParams(records: AuditRecord[], last: (row: EventColumns, r: AuditRecord) => string): unknown[] {
  const cols: unknown[][] = Array.from({ length: 13 }, () => []);
  const refs: unknown[][] = [[], [], []];
  for (const r of records) {
    const row = eventColumns(r);
    const values = [...eventValues(row, r.refs, r.compact), last(row, r)];
    values.forEach((v, i) => {
      (cols[i] as unknown[]).push(v);
    });
    for (const key of indexKeys(r.refs)) {
      (refs[0] as unknown[]).push(row.id);
      (refs[1] as unknown[]).push(key.kind);
      (refs[2] as unknown[]).push(key.value);
    }
  }
  return [...cols, ...refs];
}

/** Audit rows chained onto `head` here, ready for auditCtes; returns the new head. */
export function chainRecords(head: string, records: AuditRecord[]): { params: unknown[]; head: string } {
  let prev = head;
  const params = auditParams(records, (row, r) => {
    prev = chainHash(prev, row, r.refs, { compact: r.compact });
    return storedHash(prev);
  });
  return { params, head: prev };
}

/** Audit rows for auditCtes(…, 'database'): PostgreSQL chains them onto the head it finds under the lock. */
export const tailedRecords = (records: AuditRecord[]): unknown[] =>
  auditParams(records, (row, r) => chainTail(row, r.refs, r.compact));

/**
 * CTEs that append events in chain order (identity values follow the ORDER BY of the insert) and their
 * search refs, with parameters numbered from `offset + 1`. Run only while the writer holds the write lock, so no
 * other node's event can come between. `chain: 'database'`: the last column of each event is its chain tail
 * (chainTail), and PostgreSQL hashes each event onto its predecessor, the first onto the chain's head as it
 * finds it — SHA-256 of `["<predecessor, hex>",` and the tail, as chainHash computes it.
 */
export function auditCtes(offset: number, chain: 'given' | 'database' = 'given'): string[] {
  const $ = (k: number) => `$${offset + k}`;
  const inDatabase = chain === 'database';
  const hexOf = (stored: string) =>
    `CASE WHEN length(${stored}) = 64 THEN ${stored} ELSE encode(decode(translate(${stored}, '-_', '+/') || '=', 'base64'), 'hex') END`;
  const tails = `${$(13)}::text[]`;
  return [
    ...(inDatabase
      ? [
          `c(ord, hex) AS (
  SELECT 0::int8, ${hexOf('h.stored')} FROM (SELECT ${HEAD_STORED} AS stored) h
  UNION ALL
  SELECT c.ord + 1, encode(sha256(convert_to('["' || c.hex || '",' || (${tails})[c.ord + 1], 'UTF8')), 'hex')
  FROM c WHERE c.ord < cardinality(${tails}))`,
        ]
      : []),
    `e AS (
  INSERT INTO audit_events (id, partition, recorded, type, subtype, action, outcome, request_id, correlation_id,
    content, packed, prev_hash, hash)
  SELECT id, partition, recorded, type, subtype, action, outcome, request_id, correlation_id, content, packed, prev_hash,
    ${inDatabase ? `rtrim(translate(encode(decode(c.hex, 'hex'), 'base64'), '+/', '-_'), '=')` : 'hash'}
  FROM unnest(${$(1)}::text[], ${$(2)}::text[], ${$(3)}::int8[], ${$(4)}::text[], ${$(5)}::text[], ${$(6)}::text[],
    ${$(7)}::text[], ${$(8)}::text[], ${$(9)}::text[], ${$(10)}::text[], ${$(11)}::bytea[], ${$(12)}::text[],
    ${$(13)}::text[]) WITH ORDINALITY
    AS u(id, partition, recorded, type, subtype, action, outcome, request_id, correlation_id, content, packed, prev_hash,
      hash, ord)${inDatabase ? ' JOIN c USING (ord)' : ''}
  ORDER BY ord
  RETURNING seq, id)`,
    `er AS (INSERT INTO audit_index (kind, value, seq)
  SELECT r.kind, r.value, e.seq FROM e JOIN unnest(${$(14)}::text[], ${$(15)}::text[], ${$(16)}::text[]) AS r(id, kind, value)
    ON r.id = e.id)`,
  ];
}

/** The newest hash: of the newest event, or of the checkpoint when every event was pruned (genesis if neither). */
export const HEAD_SQL = `SELECT ${HEAD_STORED} AS hash`;

export function auditStore(pool: pg.Pool, append: (records: AuditRecord[]) => Promise<void>): AuditStore {
  const chain = async (after: number, through: number, limit: number): Promise<ChainedEvent[]> => {
    const rows = await run<EventRow & { refs: { kind: string; value: string }[] | null }>(
      pool,
      `SELECT e.*, (SELECT json_agg(json_build_object('kind', r.kind, 'value', r.value)) FROM audit_refs r
         WHERE r.seq = e.seq) AS refs FROM audit_events e WHERE e.seq > ? AND e.seq <= ? ORDER BY e.seq LIMIT ?`,
      [after, through, limit],
    );
    return rows.map((row) => chainedEvent(row, row.refs ?? []));
  };
  const checkpoint = async (): Promise<AuditCheckpoint | undefined> =>
    (await run<AuditCheckpoint>(pool, `SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoint`))[0];
  return {
    async get(id) {
      const [row] = await run<EventRow>(pool, `SELECT ${EVENT_READ_COLUMNS} FROM audit_events WHERE id = ?`, [id]);
      return row ? eventJson(row) : undefined;
    },
    async append(records) {
      if (records.length > 0) await append(records);
    },
    async search(q) {
      const w = auditWhere(q);
      const [count] = !q.uncounted
        ? await run<{ n: number }>(pool, `SELECT COUNT(*) AS n FROM audit_events e ${w.sql}`, w.params)
        : [];
      const page = auditPageWhere(q);
      const rows = await run<EventRow & { seq: number | string }>(
        pool,
        `SELECT e.seq, ${EVENT_READ_COLUMNS} FROM audit_events e ${page.sql} ORDER BY e.seq DESC LIMIT ? OFFSET ?`,
        [...page.params, q.limit, q.offset],
      );
      return {
        events: rows.map(eventJson),
        seqs: rows.map((r) => Number(r.seq)),
        total: q.uncounted ? undefined : Number(count?.n ?? 0),
      };
    },
    async verify() {
      return verifyChain(
        await checkpoint(),
        (after) => chain(after, Number.MAX_SAFE_INTEGER, 2000),
        async () => {
          // The digest of audit-index.ts, summed in the database rather than shipped row by row.
          const [d] = await run<{ n: number; sum: string | null }>(
            pool,
            `SELECT COUNT(*) AS n, SUM(('x' || substr(md5(seq::text || '|' || kind || '|' || value), 1, 15))::bit(60)::int8)::text AS sum
             FROM audit_index`,
          );
          return { count: Number(d?.n ?? 0), sum: BigInt(d?.sum ?? '0') };
        },
      );
    },
    chain,
    async prefixBefore(until) {
      const [row] = await run<{ seq: number | null }>(
        pool,
        `SELECT MAX(seq) AS seq FROM audit_events
         WHERE seq < COALESCE((SELECT MIN(seq) FROM audit_events WHERE recorded >= ?), 9223372036854775807)`,
        [until],
      );
      return Number(row?.seq ?? 0);
    },
    checkpoint,
    async prune(through, hash, now) {
      const c = await checkout(pool);
      try {
        // Under the writers' lock: the checkpoint and the deletion become visible together.
        await c.query(`BEGIN; SELECT pg_advisory_xact_lock(${LOCK_WRITE})`);
        const [last] = await run<{ seq: number; hash: string; recorded: number }>(
          c,
          'SELECT seq, hash, recorded FROM audit_events WHERE seq = ?',
          [through],
        );
        if (!last || hashHex(last.hash) !== hash) {
          await c.query('ROLLBACK');
          return undefined;
        }
        await run(c, 'DELETE FROM audit_refs WHERE seq <= ?', [through]);
        await run(c, 'DELETE FROM audit_index WHERE seq <= ?', [through]);
        const deleted = await run<{ n: number }>(
          c,
          'WITH d AS (DELETE FROM audit_events WHERE seq <= ? RETURNING 1) SELECT COUNT(*)::int8 AS n FROM d',
          [through],
        );
        await run(
          c,
          `INSERT INTO audit_checkpoint (one, seq, hash, recorded, pruned, at)
           VALUES (1, ?, ?, ?, COALESCE((SELECT pruned FROM audit_checkpoint), 0) + ?, ?)
           ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, recorded = excluded.recorded,
             pruned = excluded.pruned, at = excluded.at`,
          [last.seq, hash, last.recorded, Number(deleted[0]?.n ?? 0), now],
        );
        await c.query('COMMIT');
        c.release();
        return checkpoint();
      } catch (err) {
        c.release(true);
        return rethrow(err);
      }
    },
  };
}
