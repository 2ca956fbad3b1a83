import type pg from 'pg';
import { searchBudget } from '../search-cost.ts';
import { GENESIS, hashHex } from '../sql/audit-chain.ts';
import type { AuditRecord, CurrentVersion, ResourceTransaction, ResourceWrite, SearchQuery } from '../types.ts';
import { auditCtes, chainRecords, HEAD_SQL } from './audit.ts';
import { appendChained } from './audit-append.ts';
import { clean } from './connection.ts';
import { GENERIC_PLANS, WRITE_PARAMS, writeCtes, writeParams } from './index-rows.ts';
import { sqlLiteral } from './literal.ts';
import { LOCK_WRITE } from './migrate.ts';
import { VAULT_ROLE } from './schema.ts';

/** A transaction (or, `plain`, a list of audit events alone) waiting for the next group commit. */
export interface Job {
  partition: string;
  plain?: boolean;
  fn: (tx: ResourceTransaction) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** The reads a transaction may make, on the group's connection. */
export interface GroupReads {
  current(client: pg.PoolClient, partition: string, type: string, id: string): Promise<CurrentVersion | undefined>;
  /** Current versions of many resources (absent ones left out), in one statement. */
  currents(client: pg.PoolClient, partition: string, keys: { type: string; id: string }[]): Promise<CurrentVersion[]>;
  search: (client: pg.PoolClient, partition: string, q: SearchQuery) => ReturnType<ResourceTransaction['search']>;
  /** ms the searches of one job may take together (search-cost.ts `searchBudget`). */
  searchTimeout: number;
}

const WRITE_ONLY = `WITH ${writeCtes().join(',\n  ')}\nSELECT 1`;
const AUDIT_ONLY = `WITH ${auditCtes(0).join(',\n  ')}\nSELECT 1`;
const WRITE_AND_AUDIT = `WITH ${[...writeCtes(), ...auditCtes(WRITE_PARAMS)].join(',\n  ')}\nSELECT 1`;
const MAX_WRITES = 500;

/**
 * The database's clock, in ms: versions are stamped with it, not with the node's, so that a node whose clock
 * lags cannot stamp a version that commits after another node's with an earlier lastUpdated. Never earlier
 * than the newest stamp committed (`version_clock`, raised by every statement that writes versions), should
 * the database server's clock be set back.
 */
export const NOW_SQL = `SELECT greatest(extract(epoch FROM clock_timestamp()) * 1000,
  extract(epoch FROM nullif((SELECT last_updated FROM version_clock), '')::timestamptz) * 1000)::float8 AS now_ms`;

/** The value NOW_SQL selected, from the results of a simple query. */
export function databaseNow(results: pg.QueryResult[]): number {
  const ms = results.find((r) => r.fields?.[0]?.name === 'now_ms')?.rows[0]?.now_ms;
  if (typeof ms !== 'number') throw new Error('the database did not tell its time');
  return ms;
}

/** The transaction prologue of a vault: the vault role, and the partition row-level security admits. */
export function enterVault(partition: string): string {
  return `SET LOCAL ROLE ${VAULT_ROLE}; SELECT set_config('carevault.partition', ${sqlLiteral(partition.replaceAll('\0', '\uFFFD'))}, true)`;
}

/**
 * Commits one group of jobs in one transaction under this schema's write lock, which orders writers on all
 * nodes: the audit chain stays one line, and a condition re-checked inside a transaction (conditional create,
 * If-Match) cannot be overtaken by another node.
 *
 * Every roundtrip inside the lock is paid by every writer of every node, and a statement costs PostgreSQL
 * about a millisecond before its first row, so jobs do not each send their own: their writes and audit events
 * are buffered, and the writes of consecutive jobs (of one vault) go out together with their events as one
 * multi-row statement. Isolation between jobs is kept with savepoints only where needed:
 * - a job that sends a statement of its own (a read, a search, a write too large to buffer) first sends what
 *   earlier jobs buffered, then opens its savepoint, so its failure rolls back only itself;
 * - a statement carrying several jobs' writes runs in a savepoint; if PostgreSQL refuses it, each job's part
 *   is sent again alone, and only the job whose part is refused fails (nothing of it was sent before);
 * - a group of one transaction needs none: its failure is the transaction's.
 * Resolves every job; rejects all of them when the transaction as a whole is lost (connection gone, COMMIT
 * failed), since then nothing of it was committed.
 */
export async function commitGroup(client: pg.PoolClient, jobs: Job[], reads: GroupReads): Promise<void> {
  const c = client;
  const outcomes: { ok: boolean; value: unknown }[] = [];
  // Reads' audit events alone need not wait for the disk: as with SQLite's synchronous=NORMAL, a crash of the
  // database server (not of a node) may lose the last ones. Data writes are always durable at 2xx.
  const auditOnly = jobs.every((j) => j.plain);
  if (auditOnly) {
    const records: AuditRecord[] = [];
    for (const job of jobs) await job.fn(auditCollector((record) => records.push(record)));
    if (records.length === 0 || (await appendChained(c, records))) {
      for (const job of jobs) job.resolve(undefined);
      return;
    }
  }
  const alone = jobs.length === 1 && !jobs[0]?.plain;
  const firstVault = jobs.find((j) => !j.plain)?.partition;
  // The first statement also opens the savepoint the group's first multi-job batch will need: most groups
  // send nothing else before it, and a roundtrip inside the lock costs more than an unused savepoint.
  let spare = !alone;
  const results = (await c.query(
    `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_WRITE}); SET LOCAL ROLE ${VAULT_ROLE};${auditOnly ? ' SET LOCAL synchronous_commit TO off;' : ` ${GENERIC_PLANS};`}${firstVault !== undefined ? ` ${enterVault(firstVault)};` : ''} ${HEAD_SQL}; ${NOW_SQL};${spare ? ' SAVEPOINT batch' : ''}`,
  )) as unknown as pg.QueryResult[];
  // Read under the lock, after the previous group committed: this group's stamps are not earlier than any
  // committed before it, on any node. Within the group the node's monotonic clock advances it.
  const base = databaseNow(results);
  const since = performance.now();
  const now = () => Math.floor(base + performance.now() - since);
  const stored: string | null | undefined = results.find((r) => r.command === 'SELECT' && r.fields[0]?.name === 'hash')
    ?.rows[0]?.hash;
  let head = stored ? hashHex(stored) : GENESIS;
  let vault = firstVault;
  let release = ''; // a released savepoint, folded into the next simple statement

  const simple = async (text: string) => {
    const sql = release + text;
    release = '';
    spare = false; // whatever this opens or releases, the spare savepoint is no longer the innermost
    await c.query(sql);
  };

  // Buffered, not yet sent: writes of one vault and audit events, each with the index of its job.
  let batchVault: string | undefined;
  let writes: { job: number; write: ResourceWrite }[] = [];
  let keys = new Set<string>();
  let audits: { job: number; record: AuditRecord }[] = [];

  /** Sends buffered writes and events as one statement (inside whatever savepoint is open). */
  const send = async (w: ResourceWrite[], a: AuditRecord[]) => {
    if (w.length > 0 && vault !== batchVault) {
      await simple(enterVault(batchVault as string));
      vault = batchVault;
    }
    if (a.length === 0) {
      if (w.length > 0)
        await c.query({ name: 'cv_write', text: WRITE_ONLY, values: clean(writeParams(vault as string, w)) });
      return;
    }
    const chained = chainRecords(head, a);
    if (w.length === 0) await c.query({ name: 'cv_audit', text: AUDIT_ONLY, values: clean(chained.params) });
    else {
      const values = [...writeParams(vault as string, w), ...chained.params];
      await c.query({ name: 'cv_write_audit', text: WRITE_AND_AUDIT, values: clean(values) });
    }
    head = chained.head;
  };
  const take = () => {
    const taken = { writes, audits };
    writes = [];
    audits = [];
    keys = new Set();
    return taken;
  };

  /** Sends what jobs that already finished buffered, so that one refused part fails only its own job. */
  const sendFinished = async () => {
    const { writes: w, audits: a } = take();
    if (w.length === 0 && a.length === 0) return;
    if (alone)
      return send(
        w.map((x) => x.write),
        a.map((x) => x.record),
      );
    const kept = { head, vault };
    if (spare) spare = false;
    else await simple('SAVEPOINT batch');
    try {
      await send(
        w.map((x) => x.write),
        a.map((x) => x.record),
      );
      release = 'RELEASE batch; ';
      return;
    } catch {
      await simple('ROLLBACK TO batch; RELEASE batch');
      ({ head, vault } = kept);
    }
    const owners = [...new Set([...w.map((x) => x.job), ...a.map((x) => x.job)])].sort((x, y) => x - y);
    for (const job of owners) {
      const mine = { head, vault };
      await simple('SAVEPOINT batch');
      try {
        await send(
          w.filter((x) => x.job === job).map((x) => x.write),
          a.filter((x) => x.job === job).map((x) => x.record),
        );
        release = 'RELEASE batch; ';
      } catch (err) {
        await simple('ROLLBACK TO batch; RELEASE batch');
        ({ head, vault } = mine);
        outcomes[job] = { ok: false, value: err };
      }
    }
  };

  for (const [k, job] of jobs.entries()) {
    if (job.plain) {
      await job.fn(auditCollector((record) => audits.push({ job: k, record })));
      outcomes[k] = { ok: true, value: undefined };
      continue;
    }
    // Where this job's own buffer starts, and what its savepoint (once it has one) restores.
    const mark = { writes: writes.length, audits: audits.length };
    let saved: { head: string; vault: string | undefined } | undefined;
    /**
     * Before this job sends a statement: earlier jobs' buffer goes out, then this job's savepoint opens;
     * `flush`: this job's own buffer goes out too (before a read that must see it).
     */
    const own = async (flush: boolean) => {
      if (!saved) {
        const mine = { writes: writes.splice(mark.writes), audits: audits.splice(mark.audits) };
        await sendFinished();
        if (!alone) await simple('SAVEPOINT job');
        saved = { head, vault };
        writes = mine.writes;
        audits = mine.audits;
        keys = new Set(writes.map((x) => `${x.write.type}/${x.write.id}`));
        if (writes.length > 0) batchVault = job.partition;
      }
      if (vault !== job.partition) {
        await simple(enterVault(job.partition));
        vault = job.partition;
      }
      if (!flush) return;
      const { writes: w, audits: a } = take();
      await send(
        w.map((x) => x.write),
        a.map((x) => x.record),
      );
    };
    // What prefetch read, by key (undefined: absent), until this job writes the resource.
    const known = new Map<string, CurrentVersion | undefined>();
    const budget = searchBudget(reads.searchTimeout);
    const tx: ResourceTransaction = {
      now,
      async current(type, id) {
        const key = `${type}/${id}`;
        if (known.has(key)) return known.get(key);
        await own(keys.has(key));
        return reads.current(c, job.partition, type, id);
      },
      async prefetch(wanted) {
        if (wanted.length === 0) return;
        await own(wanted.some((k) => keys.has(`${k.type}/${k.id}`)));
        for (const k of wanted) known.set(`${k.type}/${k.id}`, undefined);
        for (const v of await reads.currents(c, job.partition, wanted)) known.set(`${v.type}/${v.id}`, v);
      },
      async write(w) {
        const key = `${w.type}/${w.id}`;
        known.delete(key);
        if (keys.has(key) || writes.length >= MAX_WRITES || (writes.length > 0 && batchVault !== job.partition)) {
          await own(true);
        }
        batchVault = job.partition;
        writes.push({ job: k, write: w });
        keys.add(key);
      },
      async audit(record) {
        audits.push({ job: k, record });
      },
      async search(q) {
        await own(true);
        return budget(() => reads.search(c, job.partition, q));
      },
    };
    try {
      const value = await job.fn(tx);
      // A job that opened a savepoint sends the rest of its buffer inside it before releasing it: were that
      // part refused later among other jobs', this job would be half committed.
      if (saved) {
        await own(true);
        if (!alone) release = 'RELEASE job; ';
      }
      outcomes[k] = { ok: true, value };
    } catch (err) {
      if (alone) {
        await c.query('ROLLBACK');
        job.reject(err);
        return;
      }
      if (saved) {
        await simple('ROLLBACK TO job; RELEASE job');
        ({ head, vault } = saved);
        take();
      } else {
        writes.splice(mark.writes);
        audits.splice(mark.audits);
        keys = new Set(writes.map((x) => `${x.write.type}/${x.write.id}`));
      }
      outcomes[k] = { ok: false, value: err };
    }
  }
  await sendFinished();
  await simple('COMMIT');
  jobs.forEach((job, k) => {
    const o = outcomes[k] as { ok: boolean; value: unknown };
    if (o.ok) job.resolve(o.value);
    else job.reject(o.value);
  });
}

/** The transaction an audit-only job sees: it only appends events. */
function auditCollector(push: (r: AuditRecord) => void): ResourceTransaction {
  return {
    now: () => Date.now(),
    current: () => Promise.reject(new Error('audit-only job')),
    write: () => Promise.reject(new Error('audit-only job')),
    search: () => Promise.reject(new Error('audit-only job')),
    async audit(r) {
      push(r);
    },
  };
}
