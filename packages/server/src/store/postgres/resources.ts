import type pg from 'pg';
import { GENESIS, hashHex } from '../sql/audit-chain.ts';
import { toVersion, type VersionRow } from '../sql/rows.ts';
import { searchQueries } from '../sql/search.ts';
import { POSTGRES } from '../sql/tables.ts';
import type { AuditRecord, HistoryQuery, ResourceStore, ResourceTransaction, ResourceWrite } from '../types.ts';
import { auditCtes, chainRecords, HEAD_SQL } from './audit.ts';
import { checkout, clean, numbered, rethrow } from './connection.ts';
import { reindexCtes, reindexParams, WRITE_PARAMS, writeCtes, writeParams } from './index-rows.ts';
import { LOCK_WRITE } from './migrate.ts';
import { VAULT_ROLE } from './schema.ts';

const CURRENT_SQL = `SELECT r.type, r.id, r.version, r.last_updated, v.method, r.content FROM resources r
  JOIN resource_versions v ON v.partition = r.partition AND v.type = r.type AND v.id = r.id AND v.version = r.version
  WHERE r.partition = $1 AND r.type = $2 AND r.id = $3`;

/** Runs `sql` (with `?` placeholders) on one connection; the statement text names its cached plan. */
async function query<T>(client: pg.PoolClient, sql: string, params: unknown[], name?: string): Promise<T[]> {
  const r = await client.query({ text: numbered(sql), values: clean(params), ...(name ? { name } : {}) });
  return r.rows as T[];
}

/** Opens the vault transaction prologue: the vault role, and the partition row-level security admits. */
function enterVault(client: pg.PoolClient, partition: string): string {
  return `SET LOCAL ROLE ${VAULT_ROLE}; SELECT set_config('carevault.partition', ${client.escapeLiteral(partition.replaceAll('\0', '\uFFFD'))}, true)`;
}

const AUDIT_BATCH_MS = 2;

// A job's buffered resource writes and audit events go out as one statement: every roundtrip inside the
// write lock is paid by every writer of every node.
const WRITE_ONLY = `WITH ${writeCtes().join(',\n  ')}\nSELECT 1`;
const AUDIT_ONLY = `WITH ${auditCtes(0).join(',\n  ')}\nSELECT 1`;
const REINDEX = `WITH ${reindexCtes().join(',\n  ')}\nSELECT 1`;
const WRITE_AND_AUDIT = `WITH ${[...writeCtes(), ...auditCtes(WRITE_PARAMS)].join(',\n  ')}\nSELECT 1`;

export function resourceStore(
  pool: pg.Pool,
  /** The read pool: connections that are the vault role and read-only from the start. */
  reads: pg.Pool,
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
  // BEGIN/COMMIT, each in its own SAVEPOINT. Every group holds the write lock of this schema, which orders
  // writers on all nodes: the audit chain stays one line, and a condition re-checked inside a transaction
  // (conditional create, If-Match) cannot be overtaken by another node.
  interface Job {
    partition: string;
    plain?: boolean;
    fn: (tx: ResourceTransaction) => Promise<unknown>;
    resolve: (value: unknown) => void;
    reject: (err: unknown) => void;
  }
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

  async function flushGroup(): Promise<void> {
    const jobs = queue.splice(0, 1000);
    const outcomes: { ok: boolean; value: unknown }[] = [];
    let client: pg.PoolClient | undefined;
    try {
      client = await checkout(pool);
      const c = client;
      // Reads' audit events alone need not wait for the disk: as with SQLite's synchronous=NORMAL, a crash of
      // the database server (not of a node) may lose the last ones. Data writes are always durable at 2xx.
      const auditOnly = jobs.every((j) => j.plain);
      // A group of one data job needs no savepoint: its failure rolls back the whole (its own) transaction.
      const alone = jobs.length === 1 && !jobs[0]?.plain ? (jobs[0] as Job) : undefined;
      const results = (await c.query(
        `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_WRITE}); SET LOCAL ROLE ${VAULT_ROLE};${auditOnly ? ' SET LOCAL synchronous_commit TO off;' : ''}${alone ? ` ${enterVault(c, alone.partition)};` : ''} ${HEAD_SQL}`,
      )) as unknown as pg.QueryResult[];
      const stored: string | null | undefined = results[results.length - 1]?.rows[0]?.hash;
      let head: string = stored ? hashHex(stored) : GENESIS;
      let open = false; // a savepoint waits to be released (folded into the next statement)
      let audits: AuditRecord[] = []; // events of audit-only jobs, sent together
      const sendAudits = async () => {
        if (audits.length === 0) return;
        const chained = chainRecords(head, audits);
        audits = [];
        await c.query({ name: 'cv_audit', text: AUDIT_ONLY, values: clean(chained.params) });
        head = chained.head;
      };
      for (const job of jobs) {
        if (job.plain) {
          await job.fn(collector((r) => audits.push(r)));
          outcomes.push({ ok: true, value: undefined });
          continue;
        }
        await sendAudits();
        if (!alone) {
          await c.query(`${open ? 'RELEASE job; ' : ''}SAVEPOINT job; ${enterVault(c, job.partition)}`);
          open = true;
        }
        const state = txState(c, job.partition, head);
        try {
          const value = await job.fn(state.tx);
          head = await state.flush();
          outcomes.push({ ok: true, value });
        } catch (err) {
          await c.query(alone ? 'ROLLBACK' : 'ROLLBACK TO job');
          if (alone) {
            c.release();
            job.reject(err);
            return;
          }
          outcomes.push({ ok: false, value: err });
        }
      }
      await sendAudits();
      await c.query(`${open ? 'RELEASE job; ' : ''}COMMIT`);
      c.release();
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
      return;
    }
    jobs.forEach((job, k) => {
      const o = outcomes[k] as { ok: boolean; value: unknown };
      if (o.ok) job.resolve(o.value);
      else job.reject(o.value);
    });
  }

  /** The transaction an audit-only job sees: it only appends events. */
  const collector = (push: (r: AuditRecord) => void): ResourceTransaction => ({
    current: () => Promise.reject(new Error('audit-only job')),
    write: () => Promise.reject(new Error('audit-only job')),
    search: () => Promise.reject(new Error('audit-only job')),
    async audit(r) {
      push(r);
    },
  });

  /**
   * The transaction a job sees. Writes and audit records are buffered and sent as one multi-row statement;
   * a read of a buffered resource or a search sends the writes first, the end of the job sends the rest.
   */
  function txState(client: pg.PoolClient, partition: string, head: string) {
    let writes: ResourceWrite[] = [];
    let keys = new Set<string>();
    const audits: AuditRecord[] = [];
    let chainHead = head;
    const flushWrites = async () => {
      if (writes.length === 0) return;
      const batch = writes;
      writes = [];
      keys = new Set();
      await client.query({ name: 'cv_write', text: WRITE_ONLY, values: clean(writeParams(partition, batch)) });
    };
    const flush = async (): Promise<string> => {
      if (audits.length === 0) {
        await flushWrites();
        return chainHead;
      }
      const chained = chainRecords(chainHead, audits.splice(0));
      if (writes.length === 0) {
        await client.query({ name: 'cv_audit', text: AUDIT_ONLY, values: clean(chained.params) });
      } else {
        const values = [...writeParams(partition, writes), ...chained.params];
        writes = [];
        keys = new Set();
        await client.query({ name: 'cv_write_audit', text: WRITE_AND_AUDIT, values: clean(values) });
      }
      chainHead = chained.head;
      return chainHead;
    };
    const tx: ResourceTransaction = {
      async current(type, id) {
        if (keys.has(`${type}/${id}`)) await flushWrites();
        const [row] = await query<VersionRow>(client, CURRENT_SQL, [partition, type, id], 'cv_current');
        return row ? toVersion(row) : undefined;
      },
      async write(w) {
        const key = `${w.type}/${w.id}`;
        if (keys.has(key)) await flushWrites();
        writes.push(w);
        keys.add(key);
        if (writes.length >= 500) await flushWrites();
      },
      async audit(record) {
        audits.push(record);
      },
      async search(q) {
        await flushWrites();
        return searchIn(client).search(partition, q);
      },
    };
    return { tx, flush };
  }

  const enqueue = <T>(job: Omit<Job, 'resolve' | 'reject'>) =>
    new Promise<T>((resolve, reject) => {
      queue.push({ ...job, resolve: resolve as Job['resolve'], reject });
      // A read's audit event waits up to AUDIT_BATCH_MS for company; data transactions go at once.
      if (queue.length === 1) schedule(job.plain ? AUDIT_BATCH_MS : 0);
    });

  const historySql = (q: HistoryQuery) => {
    const where = ['partition = ?'];
    if (q.type) where.push('type = ?');
    if (q.id) where.push('id = ?');
    if (q.since) where.push('last_updated >= ?');
    if (q.before) where.push('(last_updated, type, id, version) < (?, ?, ?, ?)');
    return `SELECT type, id, version, last_updated, method, content FROM resource_versions WHERE ${where.join(' AND ')}
      ORDER BY last_updated DESC, type DESC, id DESC, version DESC LIMIT ?`;
  };

  const resources: ResourceStore = {
    current: (partition, type, id) =>
      inVault(partition, async (c) => {
        const [row] = await query<VersionRow>(c, CURRENT_SQL, [partition, type, id], 'cv_current');
        return row ? toVersion(row) : undefined;
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
        const params: unknown[] = [partition];
        if (q.type) params.push(q.type);
        if (q.id) params.push(q.id);
        if (q.since) params.push(q.since);
        if (q.before) params.push(q.before.lastUpdated, q.before.type, q.before.id, q.before.version);
        params.push(q.limit);
        return (await query<VersionRow>(c, historySql(q), params)).map(toVersion);
      }),
    search: (partition, q) => inVault(partition, (c) => searchIn(c).search(partition, q)),
    referencedBy: (partition, sourceType, sourceIds, param, targetType) =>
      inVault(partition, (c) => searchIn(c).referencedBy(partition, sourceType, sourceIds, param, targetType)),
    referencing: (partition, sourceType, param, targets) =>
      inVault(partition, (c) => searchIn(c).referencing(partition, sourceType, param, targets)),
    scan: (partition, after, limit) => inVault(partition, (c) => searchIn(c).scan(partition, after, limit)),
    async reindex(partition, items) {
      // Under the write lock, as writers take it, so no resource changes between the version check and the rows.
      const client = await checkout(pool);
      try {
        await client.query(`BEGIN; SELECT pg_advisory_xact_lock(${LOCK_WRITE}); ${enterVault(client, partition)}`);
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
