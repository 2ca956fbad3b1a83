import type Database from 'better-sqlite3';
import { isCostly, searchBudget } from '../search-cost.ts';
import { type HistoryRow, historySql, settleHistory } from '../sql/history.ts';
import { type CurrentRow, toCurrent, toVersion, type VersionRow } from '../sql/rows.ts';
import { searchQueries } from '../sql/search.ts';
import { SQLITE } from '../sql/tables.ts';
import type { AuditRecord, ResourceStore, ResourceTransaction } from '../types.ts';
import { currentVersions } from './current-versions.ts';
import { indexWriter } from './index-rows.ts';
import type { SearchThreads } from './search-threads.ts';
import { preparedQuery } from './statements.ts';

/** Appends audit records inside the open transaction; `reset` forgets cached chain state after a rollback. */
export interface AuditAppender {
  write(r: AuditRecord): void;
  reset(): void;
}

export function resourceStore(
  db: Database.Database,
  audit: AuditAppender,
  /** Where costly searches outside a transaction run (search-cost.ts); on this thread when undefined. */
  threads?: SearchThreads,
  /** ms the searches of one transaction may take together (search-cost.ts `searchBudget`). */
  searchTimeout = 30_000,
): {
  resources: ResourceStore;
  appendAudit(records: AuditRecord[]): Promise<void>;
  grouped<T>(write: () => T): Promise<T>;
} {
  const current = db.prepare(
    'SELECT type, id, version, last_updated, content FROM resources WHERE partition = ? AND type = ? AND id = ?',
  );
  const kept = currentVersions(db, current);
  const version = db.prepare(
    'SELECT type, id, version, last_updated, method, content FROM resource_versions WHERE partition = ? AND type = ? AND id = ? AND version = ?',
  );
  const upsertCurrent = db.prepare(
    `INSERT INTO resources (partition, type, id, version, last_updated, content) VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (partition, type, id) DO UPDATE SET version = excluded.version, last_updated = excluded.last_updated,
       content = excluded.content`,
  );
  const insertVersion = db.prepare(
    'INSERT INTO resource_versions (partition, type, id, version, last_updated, method, content) VALUES (?, ?, ?, ?, ?, ?, ?)',
  );

  const historyCache = new Map<string, Database.Statement>();

  // Versions are stamped with this host's clock, but never before the newest version written (rows are appended
  // in time order): were the clock stepped back (a VM resumed, the time set by hand), a poller resuming at the
  // newest lastUpdated it saw would miss what is written next.
  const newestRow = db.prepare('SELECT last_updated FROM resource_versions ORDER BY rowid DESC LIMIT 1').get() as
    | { last_updated: string }
    | undefined;
  let newest = newestRow ? Date.parse(newestRow.last_updated) || 0 : 0;
  const clock = () => Math.max(Date.now(), newest);

  const writeIndex = indexWriter(db);

  // Group commit: transactions requested in the same turn of the event loop share one BEGIN/COMMIT, each
  // inside its own SAVEPOINT, so one failing job rolls back alone and a commit is paid once per group.
  interface Job {
    partition: string;
    /** Jobs that cannot fail halfway (audit appends) run without their own SAVEPOINT. */
    plain?: boolean;
    fn: (tx: ResourceTransaction) => Promise<unknown>;
    resolve: (value: unknown) => void;
    reject: (err: unknown) => void;
  }
  let queue: Job[] = [];
  const txFor = (partition: string, budget = searchBudget(searchTimeout)): ResourceTransaction => ({
    // One process writes this database, and a transaction runs within one turn of the event loop.
    now: clock,
    async current(type, id) {
      const row = current.get(partition, type, id) as CurrentRow | undefined;
      return row ? toCurrent(row) : undefined;
    },
    async write(w) {
      newest = Math.max(newest, Date.parse(w.lastUpdated));
      kept.forget(partition, w.type, w.id);
      writeIndex(partition, w.type, w.id, w.content === undefined ? undefined : w.index, w.version > 1);
      insertVersion.run(partition, w.type, w.id, w.version, w.lastUpdated, w.method, w.content ?? null);
      upsertCurrent.run(partition, w.type, w.id, w.version, w.lastUpdated, w.content ?? null);
    },
    async audit(record) {
      audit.write(record);
    },
    search: (q) => budget(() => search.search(partition, q)),
  });
  /**
   * Every job of the group in one transaction without savepoints; undefined, rolled back, when one fails.
   * A savepoint makes SQLite copy every page a job first changes into a statement journal (≈ 15 % of a
   * create's CPU); most groups have no failing job, so they commit without, and a group with one runs again
   * with a savepoint per job — which is why a transaction's function may run twice (ResourceStore).
   */
  async function together(jobs: Job[]): Promise<unknown[] | undefined> {
    db.exec('BEGIN IMMEDIATE');
    audit.reset();
    const values: unknown[] = [];
    try {
      for (const job of jobs) values.push(await job.fn(txFor(job.partition)));
    } catch {
      db.exec('ROLLBACK');
      audit.reset();
      return undefined;
    }
    db.exec('COMMIT');
    return values;
  }

  async function flush(): Promise<void> {
    const jobs = queue;
    queue = [];
    const outcomes: { ok: boolean; value: unknown }[] = [];
    // better-sqlite3 is synchronous: as long as a job awaits only tx calls (already-settled promises),
    // everything between BEGIN and COMMIT runs in microtasks and no other request can interleave.
    try {
      const values = await together(jobs);
      if (values) {
        jobs.forEach((job, k) => {
          job.resolve(values[k]);
        });
        return;
      }
      db.exec('BEGIN IMMEDIATE');
      audit.reset();
      for (const job of jobs) {
        if (job.plain) {
          outcomes.push({ ok: true, value: await job.fn(txFor(job.partition)) });
          continue;
        }
        db.exec('SAVEPOINT job');
        try {
          const value = await job.fn(txFor(job.partition));
          db.exec('RELEASE job');
          outcomes.push({ ok: true, value });
        } catch (err) {
          db.exec('ROLLBACK TO job');
          db.exec('RELEASE job');
          audit.reset();
          outcomes.push({ ok: false, value: err });
        }
      }
      db.exec('COMMIT');
    } catch (err) {
      audit.reset();
      if (db.inTransaction) db.exec('ROLLBACK');
      for (const job of jobs) job.reject(err);
      return;
    }
    jobs.forEach((job, k) => {
      const o = outcomes[k] as { ok: boolean; value: unknown };
      if (o.ok) job.resolve(o.value);
      else job.reject(o.value);
    });
  }
  const prepared = preparedQuery(db);
  const search = searchQueries(prepared, SQLITE);

  const enqueue = <T>(job: Omit<Job, 'resolve' | 'reject'>) =>
    new Promise<T>((resolve, reject) => {
      queue.push({ ...job, resolve: resolve as Job['resolve'], reject });
      // Everything queued in this turn of the event loop (reads' audit events, data transactions) shares one
      // commit at the next turn. A read's event used to wait 2 ms for company: with 10 keep-alive connections that
      // capped reads at ~2.6k/s with the server 40 % idle; without the wait they reach ~3.5k/s at the same CPU
      // per read (bench:concurrent).
      if (queue.length === 1) setImmediate(flush);
    });

  const resources: ResourceStore = {
    async current(partition, type, id) {
      const row = kept.get(partition, type, id);
      return row ? toCurrent(row) : undefined;
    },
    async version(partition, type, id, v) {
      const row = version.get(partition, type, id, v) as VersionRow | undefined;
      return row ? toVersion(row) : undefined;
    },
    async history(partition, q) {
      const { sql, params, key } = historySql(partition, q);
      let stmt = historyCache.get(key);
      if (!stmt) {
        stmt = db.prepare(sql);
        historyCache.set(key, stmt);
      }
      return settleHistory(partition, q, stmt.all(...params) as HistoryRow[], prepared);
    },
    async search(partition, q) {
      if (!threads) return search.search(partition, q);
      return isCostly(q) ? threads.search(partition, q) : search.search(partition, q, threads.search);
    },
    async referencedBy(partition, sourceType, sourceIds, param, targetType, bound) {
      return search.referencedBy(partition, sourceType, sourceIds, param, targetType, bound);
    },
    async referencing(partition, sourceType, param, targets, bound) {
      return search.referencing(partition, sourceType, param, targets, bound);
    },
    scan: async (partition, after, limit) => search.scan(partition, after, limit),
    metaInUse: async (partition, types, limit) => search.metaInUse(partition, types, limit),
    reindex(partition, items) {
      // A job of the group commit: serialized with every write, so a resource cannot change under it.
      return enqueue({
        partition,
        fn: async () => {
          let n = 0;
          for (const item of items) {
            const row = current.get(partition, item.type, item.id) as CurrentRow | undefined;
            if (!row || row.version !== item.version || row.content === null) continue;
            writeIndex(partition, item.type, item.id, item.index, true);
            n++;
          }
          return n;
        },
      });
    },
    transaction(partition, fn) {
      return enqueue({ partition, fn: fn as Job['fn'] });
    },
    // No transaction is ever in flight between two turns of the event loop, and versions are stamped with
    // this clock: whatever commits from now on is stamped at or after its now.
    committedThrough: async () => clock() - 1,
  };
  return {
    resources,
    // Audit appends ride on the same group commit, without a savepoint each.
    appendAudit: (records) =>
      enqueue({
        partition: '',
        plain: true,
        fn: async () => {
          for (const r of records) audit.write(r);
        },
      }),
    // So do single-statement writes of other stores (a statement fails whole, so no savepoint either).
    grouped: <T>(write: () => T) => enqueue<T>({ partition: '', plain: true, fn: async () => write() }),
  };
}
