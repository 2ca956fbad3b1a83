import type Database from 'better-sqlite3';
import { INDEX_TABLE } from '../sql/tables.ts';
import type { IndexRows } from '../types.ts';

/** Replaces the index rows of one resource; called inside the write transaction. */
export function indexWriter(db: Database.Database) {
  const del = Object.values(INDEX_TABLE).map((t) =>
    db.prepare(`DELETE FROM ${t} WHERE partition = ? AND type = ? AND id = ?`),
  );
  const ins = {
    token: db.prepare('INSERT INTO idx_token VALUES (?, ?, ?, ?, ?, ?, ?)'),
    string: db.prepare('INSERT INTO idx_string VALUES (?, ?, ?, ?, ?, ?)'),
    reference: db.prepare('INSERT INTO idx_reference VALUES (?, ?, ?, ?, ?, ?, ?)'),
    date: db.prepare('INSERT INTO idx_date VALUES (?, ?, ?, ?, ?, ?)'),
    number: db.prepare('INSERT INTO idx_number VALUES (?, ?, ?, ?, ?)'),
    quantity: db.prepare('INSERT INTO idx_quantity VALUES (?, ?, ?, ?, ?, ?, ?)'),
    uri: db.prepare('INSERT INTO idx_uri VALUES (?, ?, ?, ?, ?)'),
    composite: db.prepare('INSERT INTO idx_composite VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'),
  };
  return (partition: string, type: string, id: string, rows: IndexRows | undefined, replacing: boolean) => {
    if (replacing) for (const d of del) d.run(partition, type, id);
    if (!rows) return;
    const k = [partition, type, id] as const;
    for (const r of rows.token) ins.token.run(...k, r.param, r.system, r.code, r.text);
    for (const r of rows.string) ins.string.run(...k, r.param, r.norm, r.exact);
    for (const r of rows.reference) ins.reference.run(...k, r.param, r.targetType, r.targetId, r.url);
    for (const r of rows.date) ins.date.run(...k, r.param, r.lo, r.hi);
    for (const r of rows.number) ins.number.run(...k, r.param, r.value);
    for (const r of rows.quantity) ins.quantity.run(...k, r.param, r.value, r.system, r.code);
    for (const r of rows.uri) ins.uri.run(...k, r.param, r.value);
    for (const r of rows.composite)
      ins.composite.run(...k, r.param, r.row, r.comp, r.system, r.code, r.num, r.lo, r.hi);
  };
}
