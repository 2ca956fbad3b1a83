import type Database from 'better-sqlite3';
import { INDEX_COLUMNS, INDEX_TABLE, INDEX_VALUES } from '../sql/tables.ts';
import type { IndexKind, IndexRows } from '../types.ts';

const KINDS = Object.keys(INDEX_TABLE) as IndexKind[];

/** An index row's values as one comparable key (NULL and absent alike). */
const keyOf = (values: unknown[]) => JSON.stringify(values.map((v) => v ?? null));

/**
 * Replaces the index rows of one resource; called inside the write transaction. An update writes only the
 * rows that differ from the previous version's and deletes only those that went: most updates change a few
 * values, and every index row written or deleted touches the table and two or three indexes.
 */
export function indexWriter(db: Database.Database) {
  const statements = KINDS.map((k) => {
    const table = INDEX_TABLE[k];
    const columns = INDEX_COLUMNS[k];
    return {
      kind: k,
      owned: db
        .prepare(`SELECT rowid, ${columns.join(', ')} FROM ${table} WHERE partition = ? AND type = ? AND id = ?`)
        .raw(),
      insert: db.prepare(`INSERT INTO ${table} VALUES (?, ?, ?, ${columns.map(() => '?').join(', ')})`),
      deleteAll: db.prepare(`DELETE FROM ${table} WHERE partition = ? AND type = ? AND id = ?`),
      deleteRow: db.prepare(`DELETE FROM ${table} WHERE rowid = ?`),
      values: INDEX_VALUES[k] as (r: unknown) => unknown[],
    };
  });
  return (partition: string, type: string, id: string, rows: IndexRows | undefined, replacing: boolean) => {
    for (const s of statements) {
      if (!rows) {
        if (replacing) s.deleteAll.run(partition, type, id);
        continue;
      }
      const fresh = rows[s.kind] as unknown[];
      const old = replacing ? (s.owned.all(partition, type, id) as unknown[][]) : [];
      if (old.length === 0) {
        for (const r of fresh) s.insert.run(partition, type, id, ...s.values(r));
        continue;
      }
      // Old rows by their values (a resource may hold the same value twice): each new row keeps one if any.
      const kept = new Map<string, number[]>();
      for (const [rowid, ...values] of old) {
        const key = keyOf(values);
        const ids = kept.get(key);
        if (ids) ids.push(rowid as number);
        else kept.set(key, [rowid as number]);
      }
      for (const r of fresh) {
        const values = s.values(r);
        if (kept.get(keyOf(values))?.pop() === undefined) s.insert.run(partition, type, id, ...values);
      }
      for (const ids of kept.values()) for (const rowid of ids) s.deleteRow.run(rowid);
    }
  };
}
