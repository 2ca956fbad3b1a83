import type Database from 'better-sqlite3';

/** How long a cached answer may miss what another process committed. */
export const FOREIGN_WRITES_CHECK_MS = 100;

/**
 * Caches of one connection, dropped when another connection — another process on the same file: the CLI,
 * a second server — has committed. `PRAGMA data_version` moves only for other connections' commits (this
 * process writes through its one connection and keeps its caches right itself); it is asked at most every
 * FOREIGN_WRITES_CHECK_MS, so what another process changes binds here within that.
 */
export function foreignWrites(db: Database.Database) {
  const version = db.prepare('PRAGMA data_version').pluck();
  let seen = version.get();
  let generation = 0;
  let checkedAt = performance.now();
  const current = (): number => {
    const now = performance.now();
    if (now - checkedAt >= FOREIGN_WRITES_CHECK_MS) {
      checkedAt = now;
      const v = version.get();
      if (v !== seen) {
        seen = v;
        generation++;
      }
    }
    return generation;
  };
  return {
    /** A map that forgets everything when another connection's commit is seen (and at `max` entries). */
    cache<K, V>(max = 10_000) {
      const map = new Map<K, V>();
      let filledAt = generation;
      return {
        get(key: K, load: () => V): V {
          const g = current();
          if (g !== filledAt || map.size >= max) {
            map.clear();
            filledAt = g;
          }
          let value = map.get(key);
          if (value === undefined) {
            value = load();
            map.set(key, value);
          }
          return value;
        },
        set: (key: K, value: V) => map.set(key, value),
        clear: () => map.clear(),
      };
    },
  };
}

export type ForeignWrites = ReturnType<typeof foreignWrites>;
