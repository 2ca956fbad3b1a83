import { INDEX_COLUMNS, INDEX_TABLE, INDEX_VALUES } from '../sql/tables.ts';
import type { IndexKind, IndexRows, ResourceWrite } from '../types.ts';

/** PostgreSQL array type of each index column. */
const COLUMN_TYPE: Record<string, string> = {
  lo: 'float8',
  hi: 'float8',
  value: 'float8',
  num: 'float8',
  row: 'int4',
  comp: 'int4',
};
const typeOf = (kind: IndexKind, column: string) =>
  (kind === 'uri' && column === 'value') || !(column in COLUMN_TYPE) ? 'text' : (COLUMN_TYPE[column] as string);

const KINDS = Object.keys(INDEX_TABLE) as IndexKind[];

/**
 * Set in every transaction that writes resources: its prepared statements are planned once per connection for
 * any parameters, not again for each Bundle's values. Planned for its values, the write statement (twenty
 * CTEs) cost 3–7 ms more per 100-resource execution; PostgreSQL plans the first five executions on each
 * connection that way, and goes on doing so whenever those plans look cheaper than a generic one — as they do
 * while a vault that has just grown (an import) still has the statistics of a near-empty one and is estimated
 * to hold almost no rows, and then the deletes of a replaced resource's index rows walked the vault's rows
 * (docs/performance.md). A generic plan estimates a partition's rows from the table as a whole.
 */
export const GENERIC_PLANS = 'SET LOCAL plan_cache_mode TO force_generic_plan';

/**
 * One statement that writes many resource versions of one partition: the history rows, the current rows,
 * and all their index rows (old index rows of replaced resources deleted first), as multi-row `unnest`
 * inserts. The statement text is fixed, so PostgreSQL plans it once per connection.
 */
export function writeCtes(): string[] {
  let n = 9;
  const ctes = [
    'rep AS (SELECT * FROM unnest($8::text[], $9::text[]) AS x(type, id))',
    ...KINDS.map(
      (k, i) =>
        `d${i} AS (DELETE FROM ${INDEX_TABLE[k]} t USING rep WHERE t.partition = $1::text AND t.type = rep.type AND t.id = rep.id)`,
    ),
    `v AS (INSERT INTO resource_versions (partition, type, id, version, last_updated, method, content)
       SELECT $1::text, * FROM unnest($2::text[], $3::text[], $4::int4[], $5::text[], $6::text[], $7::text[]))`,
    `c AS (INSERT INTO resources (partition, type, id, version, last_updated, content)
       SELECT $1::text, t, i, v, l, c FROM unnest($2::text[], $3::text[], $4::int4[], $5::text[], $7::text[]) AS u(t, i, v, l, c)
       ON CONFLICT (partition, type, id) DO UPDATE SET version = excluded.version,
         last_updated = excluded.last_updated, content = excluded.content)`,
    ...KINDS.map((k, i) => {
      const cols = INDEX_COLUMNS[k];
      const arrays = ['text', 'text', ...cols.map((c) => typeOf(k, c))].map((t) => `$${++n}::${t}[]`);
      return `i${i} AS (INSERT INTO ${INDEX_TABLE[k]} (partition, type, id, ${cols.join(', ')})
       SELECT $1::text, * FROM unnest(${arrays.join(', ')}))`;
    }),
    // The floor of later stamps (group-commit.ts NOW_SQL), raised by the statement that writes: rolled back with it.
    `clk AS (UPDATE version_clock SET last_updated = greatest(last_updated, (SELECT max(l) FROM unnest($5::text[]) AS u(l))))`,
  ];
  return ctes;
}

/**
 * One statement that replaces the index rows of many current resources of one partition (a reindex): $2/$3
 * name the resources, the index arrays follow from $4 in writeCtes' order.
 */
export function reindexCtes(): string[] {
  let n = 3;
  return [
    'rep AS (SELECT * FROM unnest($2::text[], $3::text[]) AS x(type, id))',
    ...KINDS.map(
      (k, i) =>
        `d${i} AS (DELETE FROM ${INDEX_TABLE[k]} t USING rep WHERE t.partition = $1::text AND t.type = rep.type AND t.id = rep.id)`,
    ),
    ...KINDS.map((k, i) => {
      const cols = INDEX_COLUMNS[k];
      const arrays = ['text', 'text', ...cols.map((c) => typeOf(k, c))].map((t) => `$${++n}::${t}[]`);
      return `i${i} AS (INSERT INTO ${INDEX_TABLE[k]} (partition, type, id, ${cols.join(', ')})
       SELECT $1::text, * FROM unnest(${arrays.join(', ')}))`;
    }),
  ];
}

/** Parameters of reindexCtes. */
export function reindexParams(partition: string, items: { type: string; id: string; index: IndexRows }[]): unknown[] {
  return [partition, items.map((i) => i.type), items.map((i) => i.id), ...indexColumns(items)];
}

/** The index rows of resources as one array per column, kind by kind (the unnest inputs). */
function indexColumns(
  items: { type: string; id: string; index?: IndexRows | undefined; content?: string | undefined; skip?: boolean }[],
): unknown[][] {
  const out: unknown[][] = [];
  for (const kind of KINDS) {
    const columns: unknown[][] = [[], [], ...INDEX_COLUMNS[kind].map(() => [])];
    for (const w of items) {
      if (w.skip || !w.index) continue;
      for (const row of w.index[kind]) {
        const values = (INDEX_VALUES[kind] as (r: unknown) => unknown[])(row);
        (columns[0] as unknown[]).push(w.type);
        (columns[1] as unknown[]).push(w.id);
        values.forEach((v, c) => {
          (columns[c + 2] as unknown[]).push(v);
        });
      }
    }
    out.push(...columns);
  }
  return out;
}

/** Number of parameters of the write CTEs. */
export const WRITE_PARAMS = 9 + KINDS.reduce((n, k) => n + 2 + INDEX_COLUMNS[k].length, 0);

/** Parameters of writeCtes for writes of distinct resources. */
export function writeParams(partition: string, writes: ResourceWrite[]): unknown[] {
  const replaced = writes.filter((w) => w.version > 1);
  const params: unknown[] = [
    partition,
    writes.map((w) => w.type),
    writes.map((w) => w.id),
    writes.map((w) => w.version),
    writes.map((w) => w.lastUpdated),
    writes.map((w) => w.method),
    writes.map((w) => w.content ?? null),
    replaced.map((w) => w.type),
    replaced.map((w) => w.id),
  ];
  params.push(...indexColumns(writes.map((w) => ({ ...w, skip: w.content === undefined }))));
  return params;
}
