import type pg from 'pg';
import { type GrantRow, toGrant } from '../sql/rows.ts';
import type { GrantRecord, PartitionRecord, PartitionStore } from '../types.ts';
import { checkout, rethrow, run } from './connection.ts';
import type { Listener } from './listener.ts';

const GRANTS_CHANNEL = 'carevault_grants';
const GRANTS_CACHED = 10_000;

interface PartitionRow {
  name: string;
  account_urn: string | null;
  created_at: number;
  identifiers: string[] | null;
}

const toPartition = (row: PartitionRow): PartitionRecord => ({
  name: row.name,
  accountUrn: row.account_urn ?? undefined,
  identifiers: row.identifiers ?? [],
  createdAt: row.created_at,
});

const SELECT_PARTITION = `SELECT p.name, p.account_urn, p.created_at,
  (SELECT array_agg(i.value ORDER BY i.value) FROM account_identifiers i WHERE i.partition = p.name) AS identifiers
  FROM partitions p`;

/**
 * Every FHIR request asks for its client's grants on the vault; on PostgreSQL that was a roundtrip each. The
 * answers are cached in memory while the node's listening connection is fresh (listener.ts), and a grant
 * change NOTIFYs every node, which then forgets them all: grants change seldom, and a narrowed or replaced
 * grant binds every node within a second, as a revocation does.
 */
export function partitionStore(pool: pg.Pool, schema: string, notifications: Listener): PartitionStore {
  const grants = new Map<string, GrantRecord[]>();
  // Bumped whenever cached answers may be stale: an answer read across a bump is not cached.
  let generation = 0;
  const forget = () => {
    grants.clear();
    generation++;
  };
  notifications.subscribe({
    channel: GRANTS_CHANNEL,
    notify(payload) {
      try {
        if ((JSON.parse(payload) as unknown[])[0] === schema) forget();
      } catch {}
    },
    async load() {
      forget();
    },
  });
  return {
    async create(r) {
      const client = await checkout(pool);
      try {
        await client.query('BEGIN');
        const inserted = await client.query(
          'INSERT INTO partitions (name, account_urn, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
          [r.name, r.accountUrn ?? null, r.createdAt],
        );
        let ok = inserted.rowCount === 1;
        for (const value of ok ? r.identifiers : []) {
          const added = await client.query(
            'INSERT INTO account_identifiers (partition, value) VALUES ($1, $2) ON CONFLICT DO NOTHING',
            [r.name, value],
          );
          if (added.rowCount !== 1) ok = false;
        }
        await client.query(ok ? 'COMMIT' : 'ROLLBACK');
        client.release();
        return ok;
      } catch (err) {
        client.release(true);
        return rethrow(err);
      }
    },
    async get(name) {
      const [row] = await run<PartitionRow>(pool, `${SELECT_PARTITION} WHERE p.name = ?`, [name]);
      return row ? toPartition(row) : undefined;
    },
    async list() {
      return (await run<PartitionRow>(pool, `${SELECT_PARTITION} ORDER BY p.name`)).map(toPartition);
    },
    async findByIdentifier(value) {
      const [row] = await run<PartitionRow>(
        pool,
        `${SELECT_PARTITION} WHERE p.name = (SELECT partition FROM account_identifiers WHERE value = ?)`,
        [value],
      );
      return row ? toPartition(row) : undefined;
    },
    async hasIdentifierPrefix(prefix) {
      // A range scan on the unique index ("C" collation): every value starting with `prefix` sorts between these.
      const rows = await run(pool, 'SELECT 1 FROM account_identifiers WHERE value >= ? AND value < ? LIMIT 1', [
        prefix,
        `${prefix}\u{10ffff}`,
      ]);
      return rows.length > 0;
    },
    async putGrant(g) {
      await run(
        pool,
        `WITH put AS (INSERT INTO partition_grants (partition, subject_kind, subject, scope, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (partition, subject_kind, subject) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at)
         SELECT pg_notify('${GRANTS_CHANNEL}', ?)`,
        [g.partition, g.subjectKind, g.subject, g.scope, g.createdAt, JSON.stringify([schema])],
      );
      forget();
    },
    async removeGrant(partition, subjectKind, subject) {
      const rows = await run<{ removed: string }>(
        pool,
        `WITH gone AS (DELETE FROM partition_grants WHERE partition = ? AND subject_kind = ? AND subject = ? RETURNING 1)
         SELECT count(*) AS removed, pg_notify('${GRANTS_CHANNEL}', ?) FROM gone`,
        [partition, subjectKind, subject, JSON.stringify([schema])],
      );
      forget();
      return Number(rows[0]?.removed ?? 0) > 0;
    },
    async grantsFor(partition, clientId, organizations) {
      notifications.start();
      const key = JSON.stringify([partition, clientId, organizations]);
      const fresh = notifications.fresh();
      const hit = fresh ? grants.get(key) : undefined;
      if (hit) return hit;
      const before = generation;
      const rows = await run<GrantRow>(
        pool,
        `SELECT * FROM partition_grants WHERE partition = ?
           AND ((subject_kind = 'client' AND subject = ?) OR (subject_kind = 'org' AND subject = ANY(?::text[])))`,
        [partition, clientId, organizations],
        { prepared: true },
      );
      const found = rows.map(toGrant);
      if (fresh && notifications.fresh() && generation === before) {
        if (grants.size >= GRANTS_CACHED) grants.clear();
        grants.set(key, found);
      }
      return found;
    },
    async listGrants(partition) {
      const rows = partition
        ? await run<GrantRow>(
            pool,
            'SELECT * FROM partition_grants WHERE partition = ? ORDER BY subject_kind, subject',
            [partition],
          )
        : await run<GrantRow>(pool, 'SELECT * FROM partition_grants ORDER BY partition, subject_kind, subject');
      return rows.map(toGrant);
    },
  };
}
