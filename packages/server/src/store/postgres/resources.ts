import type pg from 'pg';
import { type HistoryRow, historySql, settleHistory } from '../sql/history.ts';
import { type CurrentRow, toCurrent, toVersion, type VersionRow } from '../sql/rows.ts';
import { searchQueries } from '../sql/search.ts';
import { POSTGRES } from '../sql/tables.ts';
import type { AuditRecord, CurrentVersion, ResourceStore } from '../types.ts';
import { checkout, clean, numbered, rethrow } from './connection.ts';
import { commitGroup, databaseNow, enterVault, type GroupReads, type Job, NOW_SQL } from './group-commit.ts';
import { GENERIC_PLANS, reindexCtes, reindexParams } from './index-rows.ts';
import { LOCK_WRITE } from './migrate.ts';

const REINDEX = `WITH ${reindexCtes().join(',\n  ')}\nSELECT 1`;

const CURRENT_SQL =
  'SELECT type, id, version, last_updated, content FROM resources WHERE partition = $1 AND type = $2 AND id = $3';

// One primary-key lookup per wanted key. Written as `(type, id) IN (unnest …)` the planner, trusting the
// statistics of a vault that has just grown (a first import; autovacuum has not analysed it yet), scanned the
// whole vault and compared it with every key: 12 ms instead of 1 for 100 keys in a vault of 1,000. The
// lateral subquery (kept from being flattened by OFFSET 0) fixes the order whatever the statistics say.
const CURRENTS_SQL = `SELECT c.* FROM unnest($2::text[], $3::text[]) AS k(type, id) CROSS JOIN LATERAL (
  SELECT r.type, r.id, r.version, r.last_updated, r.content FROM resources r
  WHERE r.partition = $1 AND r.type = k.type AND r.id = k.id OFFSET 0) c`;

/** Runs `sql` (with `?` placeholders) on one connection; the statement text names its cached plan. */
async function query<T>(client: pg.PoolClient, sql: string, params: unknown[], name?: string): Promise<T[]> {
  const r = await client.query({ text: numbered(sql), values: clean(params), ...(name ? { name } : {}) });
  return r.rows as T[];
}

const AUDIT_BATCH_MS = 2;

export function resourceStore(
  pool: pg.Pool,
  /** The read pool: connections that are the vault role and read-only from the start. */
  reads: pg.Pool,
  /** ms the searches of one transaction may take together (search-cost.ts `searchBudget`). */
  searchTimeout = 30_000,
): {
  resources: ResourceStore;
  appendAudit(records: AuditRecord[]): Promise<void>;
  idle(): Promise<void>;
} {
  // The partition each read connection is confined to now (a session setting: it outlives the read).
  const confinedTo = new WeakMap<pg.PoolClient, string>();

  /**
   * A read on a connection of the read pool (vault role, read-only): row-level security admits only the
   * partition set on it, so a query that forgot its partition filter sees nothing of another vault. The
   * setting is changed only when the connection last served another partition.
   */
  async function inVault<T>(partition: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await checkout(reads);
    try {
      if (confinedTo.get(client) !== partition) {
        confinedTo.delete(client);
        await client.query({
          name: 'cv_confine',
          text: "SELECT set_config('carevault.partition', $1, false)",
          values: [partition.replaceAll('\0', '\uFFFD')],
        });
        confinedTo.set(client, partition);
      }
      const value = await fn(client);
      client.release();
      return value;
    } catch (err) {
      // Whatever state a failed statement left (or a set_config cut short), the connection is not reused.
      client.release(true);
      return rethrow(err);
    }
  }

  const searchIn = (client: pg.PoolClient) =>
    searchQueries(<T>(sql: string, params: unknown[]) => query<T>(client, sql, params), POSTGRES);

  // Group commit, as in the SQLite store: transactions queued while one group commits share the next
  // BEGIN/COMMIT (group-commit.ts).
  const queue: Job[] = [];
  let running: Promise<void> | undefined;

  function schedule(delay: number) {
    if (running) return;
    running = new Promise<void>((resolve) => {
      const go = () =>
        flushGroup()
          .catch(() => {})
          .finally(() => {
            running = undefined;
            resolve();
            if (queue.length) schedule(0);
          });
      if (delay > 0) setTimeout(go, delay);
      else setImmediate(go);
    });
  }

  const groupReads: GroupReads = {
    async current(client, partition, type, id) {
      const [row] = await query<CurrentRow>(client, CURRENT_SQL, [partition, type, id], 'cv_current');
      return row ? toCurrent(row) : undefined;
    },
    async currents(client, partition, wanted) {
      const rows = await query<CurrentRow>(
        client,
        CURRENTS_SQL,
        [partition, wanted.map((k) => k.type), wanted.map((k) => k.id)],
        'cv_currents',
      );
      return rows.map(toCurrent);
    },
    search: (client, partition, q) => searchIn(client).search(partition, q),
    searchTimeout,
  };

  async function flushGroup(): Promise<void> {
    const jobs = queue.splice(0, 1000);
    let client: pg.PoolClient | undefined;
    try {
      client = await checkout(pool);
      await commitGroup(client, jobs, groupReads);
      client.release();
    } catch (err) {
      // The group is lost as a whole (connection gone, COMMIT failed): nothing of it is acknowledged.
      client?.release(true);
      const failure = (() => {
        try {
          return rethrow(err);
        } catch (e) {
          return e;
        }
      })();
      for (const job of jobs) job.reject(failure);
    }
  }

  const enqueue = <T>(job: Omit<Job, 'resolve' | 'reject'>) =>
    new Promise<T>((resolve, reject) => {
      queue.push({ ...job, resolve: resolve as Job['resolve'], reject });
      // A read's audit event waits up to AUDIT_BATCH_MS for company; data transactions go at once.
      if (queue.length === 1) schedule(job.plain ? AUDIT_BATCH_MS : 0);
    });

  /**
   * Current-version lookups of one vault that arrive in the same turn of the event loop go out as one statement.
   * A lookup is one primary-key probe for PostgreSQL, but a roundtrip for the node (a socket write, a response
   * parsed, a pooled connection): under concurrent reads that roundtrip was most of a read's CPU in this process.
   * Sent no earlier than asked, so a lookup still sees every write acknowledged before it was asked.
   */
  type Lookup = {
    type: string;
    id: string;
    resolve: (v: CurrentVersion | undefined) => void;
    reject: (e: unknown) => void;
  };
  const lookups = new Map<string, Lookup[]>();
  const lookUp = (partition: string, batch: Lookup[]) =>
    inVault(partition, async (c) => {
      const first = batch[0] as Lookup;
      if (batch.every((l) => l.type === first.type && l.id === first.id)) {
        const [row] = await query<CurrentRow>(c, CURRENT_SQL, [partition, first.type, first.id], 'cv_current');
        return row ? [toCurrent(row)] : [];
      }
      return groupReads.currents(c, partition, batch);
    }).then(
      (found) => {
        const byKey = new Map(found.map((v) => [`${v.type}/${v.id}`, v]));
        for (const l of batch) l.resolve(byKey.get(`${l.type}/${l.id}`));
      },
      (err) => {
        for (const l of batch) l.reject(err);
      },
    );
  const lookUpAll = () => {
    const all = [...lookups];
    lookups.clear();
    for (const [partition, batch] of all) void lookUp(partition, batch);
  };

  const resources: ResourceStore = {
    current: (partition, type, id) =>
      new Promise((resolve, reject) => {
        let batch = lookups.get(partition);
        if (!batch) {
          if (lookups.size === 0) setImmediate(lookUpAll);
          batch = [];
          lookups.set(partition, batch);
        }
        batch.push({ type, id, resolve, reject });
      }),
    version: (partition, type, id, v) =>
      inVault(partition, async (c) => {
        const [row] = await query<VersionRow>(
          c,
          'SELECT type, id, version, last_updated, method, content FROM resource_versions WHERE partition = ? AND type = ? AND id = ? AND version = ?',
          [partition, type, id, v],
          'cv_version',
        );
        return row ? toVersion(row) : undefined;
      }),
    history: (partition, q) =>
      inVault(partition, async (c) => {
        const { sql, params } = historySql(partition, q);
        const rows = await query<HistoryRow>(c, sql, params);
        return settleHistory(partition, q, rows, <T>(text: string, values: unknown[]) => query<T>(c, text, values));
      }),
    search: (partition, q) => inVault(partition, (c) => searchIn(c).search(partition, q)),
    referencedBy: (partition, sourceType, sourceIds, param, targetType, bound) =>
      inVault(partition, (c) => searchIn(c).referencedBy(partition, sourceType, sourceIds, param, targetType, bound)),
    referencing: (partition, sourceType, param, targets, bound) =>
      inVault(partition, (c) => searchIn(c).referencing(partition, sourceType, param, targets, bound)),
    scan: (partition, after, limit) => inVault(partition, (c) => searchIn(c).scan(partition, after, limit)),
    metaInUse: (partition, types, limit) => inVault(partition, (c) => searchIn(c).metaInUse(partition, types, limit)),
    async reindex(partition, items) {
      // Under the write lock, as writers take it, so no resource changes between the version check and the rows.
      const client = await checkout(pool);
      try {
        await client.query(
          `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_WRITE}); ${GENERIC_PLANS}; ${enterVault(partition)}`,
        );
        const versions = await query<{ type: string; id: string; version: number }>(
          client,
          'SELECT type, id, version FROM resources WHERE partition = ? AND content IS NOT NULL AND (type, id) IN (SELECT * FROM unnest(?::text[], ?::text[]))',
          [partition, items.map((i) => i.type), items.map((i) => i.id)],
        );
        const now = new Map(versions.map((v) => [`${v.type}/${v.id}`, Number(v.version)]));
        const fresh = items.filter((i) => now.get(`${i.type}/${i.id}`) === i.version);
        if (fresh.length) await client.query({ text: REINDEX, values: clean(reindexParams(partition, fresh)) });
        await client.query('COMMIT');
        client.release();
        return fresh.length;
      } catch (err) {
        client.release(true);
        return rethrow(err);
      }
    },
    transaction(partition, fn) {
      return enqueue({ partition, fn: fn as Job['fn'] });
    },
    async committedThrough() {
      // Under the write lock no transaction is between stamping and committing, and versions are stamped with
      // the database's clock (group-commit.ts): what committed is stamped at or before its now, what commits
      // later at or after it.
      const client = await checkout(pool);
      try {
        const results = (await client.query(
          `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_WRITE}); ${NOW_SQL}; COMMIT`,
        )) as unknown as pg.QueryResult[];
        client.release();
        return Math.floor(databaseNow(results)) - 1;
      } catch (err) {
        client.release(true);
        return rethrow(err);
      }
    },
  };
  return {
    resources,
    appendAudit: (records) =>
      enqueue({
        partition: '',
        plain: true,
        fn: async (tx) => {
          for (const r of records) await tx.audit(r);
        },
      }),
    async idle() {
      while (running || queue.length) await (running ?? new Promise((r) => setImmediate(r)));
    },
  };
}
