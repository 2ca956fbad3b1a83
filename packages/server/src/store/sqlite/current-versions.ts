import type Database from 'better-sqlite3';
import type { CurrentRow } from '../sql/rows.ts';

/** What the kept rows may hold in content characters, and the largest one kept. */
const MAX_CHARS = 16 * 1024 * 1024;
const MAX_ROW_CHARS = 256 * 1024;

/**
 * Current-version rows this process has read, so that a read by id does not look the row up again (in the
 * server a lookup cost ≈ a tenth of a read: docs/performance.md). Exact, not eventually right:
 * - this process writes through its one connection and forgets a row when it writes it;
 * - a row is kept only when read outside a transaction, so it is committed (a rollback cannot leave a row here);
 * - `PRAGMA data_version` moves when another connection (the CLI, another process on the same file) has committed,
 *   and then everything kept is dropped. It is asked at the first lookup of each turn of the event loop, not on
 *   every one: it begins and ends a read transaction, which cost more than half of what it saves. So a read
 *   misses another process's commit only when that commit landed during the same turn, after the check (the
 *   policy caches in foreign-writes.ts may miss one for 100 ms).
 * Rows leave first in, first out once MAX_CHARS is reached.
 */
export function currentVersions(db: Database.Database, lookup: Database.Statement) {
  const dataVersion = db.prepare('PRAGMA data_version').pluck();
  let seen = dataVersion.get();
  let checked = false;
  const nextTurn = () => {
    checked = false;
  };
  const rows = new Map<string, CurrentRow>();
  let chars = 0;
  const keyOf = (partition: string, type: string, id: string) => `${partition}\u0000${type}\u0000${id}`;
  const clear = () => {
    rows.clear();
    chars = 0;
  };
  return {
    get(partition: string, type: string, id: string): CurrentRow | undefined {
      if (db.inTransaction) return lookup.get(partition, type, id) as CurrentRow | undefined;
      if (!checked) {
        checked = true;
        setImmediate(nextTurn);
        const version = dataVersion.get();
        if (version !== seen) {
          seen = version;
          clear();
        }
      }
      const key = keyOf(partition, type, id);
      const kept = rows.get(key);
      if (kept) return kept;
      const row = lookup.get(partition, type, id) as CurrentRow | undefined;
      const size = row?.content?.length ?? 0;
      if (!row || size > MAX_ROW_CHARS) return row;
      rows.set(key, row);
      chars += size;
      for (const [k, r] of rows) {
        if (chars <= MAX_CHARS) break;
        rows.delete(k);
        chars -= r.content?.length ?? 0;
      }
      return row;
    },
    /** Called for every row this connection writes, before its transaction commits or rolls back. */
    forget(partition: string, type: string, id: string): void {
      const key = keyOf(partition, type, id);
      const kept = rows.get(key);
      if (!kept) return;
      rows.delete(key);
      chars -= kept.content?.length ?? 0;
    },
  };
}
