import type { IndexKind, IndexRows } from '../types.ts';

/** The search index table of each value kind; table names in SQL come only from this map. */
export const INDEX_TABLE: Record<IndexKind, string> = {
  token: 'idx_token',
  string: 'idx_string',
  reference: 'idx_reference',
  date: 'idx_date',
  number: 'idx_number',
  quantity: 'idx_quantity',
  uri: 'idx_uri',
  composite: 'idx_composite',
};

/** Columns of each index table after (partition, type, id), in insert order. */
export const INDEX_COLUMNS: Record<IndexKind, readonly string[]> = {
  token: ['param', 'system', 'code', 'text'],
  string: ['param', 'norm', 'exact'],
  reference: ['param', 'target_type', 'target_id', 'url'],
  date: ['param', 'lo', 'hi'],
  number: ['param', 'value'],
  quantity: ['param', 'value', 'system', 'code'],
  uri: ['param', 'value'],
  composite: ['param', 'row', 'comp', 'system', 'code', 'num', 'lo', 'hi'],
};

/** The value of each column of an index row, in INDEX_COLUMNS order. */
export const INDEX_VALUES: { [K in IndexKind]: (r: IndexRows[K][number]) => unknown[] } = {
  token: (r) => [r.param, r.system, r.code, r.text],
  string: (r) => [r.param, r.norm, r.exact],
  reference: (r) => [r.param, r.targetType, r.targetId, r.url],
  date: (r) => [r.param, r.lo, r.hi],
  number: (r) => [r.param, r.value],
  quantity: (r) => [r.param, r.value, r.system, r.code],
  uri: (r) => [r.param, r.value],
  composite: (r) => [r.param, r.row, r.comp, r.system, r.code, r.num, r.lo, r.hi],
};

/** What the SQL of the two engines differs in, where the search compiler needs it. */
export interface SqlDialect {
  /** Epoch milliseconds of an ISO-instant text column. */
  epochMs(column: string): string;
  /** The expression, in a form that keeps the planner from choosing an index for ORDER BY. */
  unindexed(expression: string): string;
  /**
   * Whether a search's index conditions are checked inside the driving condition's subquery (search-filter.ts).
   * SQLite runs the statement as nested; PostgreSQL joins the conditions itself, and given them nested, its
   * generic plans scanned the whole code index per candidate (code + subject: 971 → 115 searches/s).
   */
  checksInDriver: boolean;
  /**
   * Whether a search whose driving condition matches many resources first tries walking the time index
   * (search.ts `denseWalk`). PostgreSQL's planner makes that choice itself from its statistics.
   */
  walksDenseMatches: boolean;
}

export const SQLITE: SqlDialect = {
  epochMs: (c) => `(unixepoch(${c}, 'subsec') * 1000)`,
  unindexed: (e) => `+${e}`,
  checksInDriver: true,
  walksDenseMatches: true,
};

export const POSTGRES: SqlDialect = {
  epochMs: (c) => `(extract(epoch from ${c}::timestamptz) * 1000)`,
  unindexed: (e) => e,
  checksInDriver: false,
  walksDenseMatches: false,
};
