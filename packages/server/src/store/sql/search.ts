import { timeOrder } from '../search-order.ts';
import type {
  FoundResource,
  IncludeBound,
  MetaInUse,
  ScannedResource,
  SearchFilter,
  SearchQuery,
  SearchResult,
  SizedResource,
  SortKey,
} from '../types.ts';
import { compileFilter, type Sql } from './search-filter.ts';
import { compileAll, driverRows } from './search-plan.ts';
import { INDEX_TABLE, type SqlDialect } from './tables.ts';

const SORT_COLUMN: Record<string, string> = {
  token: 'code',
  string: 'norm',
  reference: 'target_id',
  date: 'lo',
  number: 'value',
  quantity: 'value',
  uri: 'value',
  composite: 'code',
};

function sortSql(key: SortKey, descending: boolean, alias: string): Sql {
  const dir = descending ? 'DESC' : 'ASC';
  if (key.kind === 'id') return { sql: `${alias}.id ${dir}`, params: [] };
  if (key.kind === 'lastUpdated') return { sql: `${alias}.last_updated ${dir}`, params: [] };
  const table = INDEX_TABLE[key.index];
  const col = SORT_COLUMN[key.index] as string;
  // Ascending sorts by a resource's smallest value, descending by its largest (search.html#sort); no value sorts last.
  const agg = descending ? `MAX(${key.index === 'date' ? 'hi' : col})` : `MIN(${col})`;
  const sub = `(SELECT ${agg} FROM ${table} s WHERE s.partition = ${alias}.partition AND s.type = ${alias}.type AND s.id = ${alias}.id AND s.param = ?)`;
  return { sql: `${sub} IS NULL, ${sub} ${dir}`, params: [key.param, key.param] };
}

/**
 * The page size written into the statement as a number: SQLite (3.53) runs a statement that sorts with a bound
 * LIMIT ≈ 30 % slower (code + subject, 15 of 30 candidates: 100 → 130 µs; a history page 48 → 57 µs). It is an
 * integer from the parser; a page size has few values, so statement caches still hold.
 */
export function limitSql(limit: number): string {
  if (!Number.isSafeInteger(limit) || limit < 0) throw new Error(`not a page size: ${limit}`);
  return `LIMIT ${limit}`;
}

/** A bound on a lookup's rows (a parameter: one statement text whatever the bound), or none for Infinity. */
const capSql = (limit: number): Sql =>
  limit === Number.POSITIVE_INFINITY ? { sql: '', params: [] } : { sql: 'LIMIT ?', params: [limit] };

/**
 * Whether the matches are best found by walking the (partition, type, last_updated, id) index in page order:
 * when nothing but `_lastUpdated` narrows them, the walk stops after one page instead of sorting the whole type.
 * Any other condition drives the plan from its own index (and the page is sorted from its matches), so the
 * order is then kept out of the planner's choice.
 */
function walkTimeIndex(filters: SearchFilter[]): boolean {
  return filters.every((f) => f.kind === 'lastUpdated');
}

/**
 * A search whose driving condition has at least `DENSE` index rows (a patient with years of vital signs) first
 * walks the time index, checking every condition per resource, over at most `WINDOW` resources from where the
 * page starts: when matches are dense the page fills after a few dozen, where the driven plan reads and sorts
 * every match (a patient with 50,000 of 100,000 Observations: ≈ 70 ms a page). A walk that did not fill its page
 * gives way to the driven plan, so a search costs at most about twice the driven plan's cost.
 */
const DENSE = 5000;
const WINDOW = 2000;

const MISSED = Symbol('the dense walk missed');

/**
 * A page's rows bring their content only up to this size; larger ones (documents with attachments) are read
 * afterwards, and only while the page's `maxBytes` has room: `octet_length` is read from the row without its
 * content, so a page of 1,000 large resources is never in memory whole.
 */
const INLINE = 64 * 1024;
const sizedColumns = (inline: number) => `r.type, r.id,
  CASE WHEN octet_length(r.content) <= ${inline} THEN r.content END AS content, octet_length(r.content) AS size`;
const SIZED_COLUMNS = sizedColumns(INLINE);
const PAGE_COLUMNS = `${SIZED_COLUMNS}, r.last_updated AS "lastUpdated"`;
/** A page row: without its content when that is larger than INLINE. */
type PageRow = Omit<FoundResource, 'content'> & { content: string | null; size: number };

/** Runs one statement with `?` placeholders and returns its rows. */
export type Query = <T>(sql: string, params: unknown[]) => Promise<T[]>;

/** The search SQL both engines share: compiled once here, run by the engine's own `query`. */
export function searchQueries(query: Query, dialect: SqlDialect) {
  function where(partition: string, q: SearchQuery): Sql {
    const parts = compileAll(q.filters, 'r', partition, q.type, { dialect, n: 0 });
    return {
      sql: ['r.partition = ?', 'r.type = ?', 'r.content IS NOT NULL', ...parts.map((p) => p.sql)].join(' AND '),
      params: [partition, q.type, ...parts.flatMap((p) => p.params)],
    };
  }

  /**
   * The page by walking the time index (SQLite syntax); undefined when no condition is dense, `MISSED` when one
   * is but the walk did not fill the page — the driven plan then reads every match of that condition.
   */
  async function denseWalk(
    partition: string,
    q: SearchQuery,
    time: 'ASC' | 'DESC',
  ): Promise<PageRow[] | typeof MISSED | undefined> {
    const rows = driverRows(q.filters, partition, q.type, { dialect, n: 0 });
    if (!rows) return undefined;
    const [many] = await query(`${rows.sql} LIMIT 1 OFFSET ${DENSE - 1}`, rows.params);
    if (!many) return undefined;
    const beyond = time === 'DESC' ? '<' : '>';
    const from: Sql = q.after
      ? { sql: ` AND (last_updated, id) ${beyond} (?, ?)`, params: [q.after.lastUpdated, q.after.id] }
      : { sql: '', params: [] };
    const [edge] = await query<{ last_updated: string; id: string }>(
      `SELECT last_updated, id FROM resources INDEXED BY resources_type_time WHERE partition = ? AND type = ?${from.sql}
         ORDER BY last_updated ${time}, id ${time} LIMIT 1 OFFSET ${WINDOW - 1}`,
      [partition, q.type, ...from.params],
    );
    const until: Sql = edge
      ? { sql: ` AND (last_updated, id) ${time === 'DESC' ? '>=' : '<='} (?, ?)`, params: [edge.last_updated, edge.id] }
      : { sql: '', params: [] };
    const c = { dialect, n: 0 };
    const checks = q.filters.map((f) => compileFilter(f, 'r', partition, q.type, c, 'exists'));
    const page = await query<PageRow>(
      `SELECT ${PAGE_COLUMNS} FROM resources r INDEXED BY resources_type_time
         WHERE ${['r.partition = ?', 'r.type = ?', ...checks.map((c) => c.sql), 'r.content IS NOT NULL'].join(' AND ')}${from.sql}${until.sql}
         ORDER BY r.last_updated ${time}, r.id ${time} ${limitSql(q.limit)} OFFSET ?`,
      [partition, q.type, ...checks.flatMap((c) => c.params), ...from.params, ...until.params, q.offset],
    );
    // Short with the window cut off: the page's matches may lie beyond it.
    return page.length === q.limit || !edge ? page : MISSED;
  }

  /** The page's rows within `q.maxBytes` (the first always), with the content of the large ones read now. */
  async function settle(partition: string, q: SearchQuery, rows: PageRow[]): Promise<SearchResult> {
    const budget = q.maxBytes ?? Number.POSITIVE_INFINITY;
    let n = 0;
    for (let used = 0; n < rows.length; n++) {
      used += Number((rows[n] as PageRow).size);
      if (used > budget && n > 0) break;
    }
    const kept = n < rows.length ? rows.slice(0, n) : rows;
    const large = kept.filter((r) => r.content === null).map((r) => r.id);
    if (large.length === 0) return { matches: kept as FoundResource[], more: n < rows.length };
    const contents = new Map<string, string>();
    for (let i = 0; i < large.length; i += 500) {
      const ids = large.slice(i, i + 500);
      const found = await query<{ id: string; content: string }>(
        `SELECT r.id, r.content FROM resources r WHERE r.partition = ? AND r.type = ? AND r.content IS NOT NULL
           AND r.id IN (${ids.map(() => '?').join(',')})`,
        [partition, q.type, ...ids],
      );
      for (const f of found) contents.set(f.id, f.content);
    }
    // A match deleted since the page was read is left out; the page then says there may be more, since a page
    // shorter than asked would otherwise read as the last.
    const matches = kept.flatMap((r) => {
      const content = r.content ?? contents.get(r.id);
      return content === undefined ? [] : [{ ...r, content }];
    });
    return { matches, more: n < rows.length || matches.length < kept.length };
  }

  return {
    /**
     * `dense`: where a search goes whose driving condition is dense and whose walk missed (the embedded store:
     * a search thread, sqlite/search-threads.ts); here when not given.
     */
    async search(
      partition: string,
      q: SearchQuery,
      dense?: (partition: string, q: SearchQuery) => Promise<SearchResult>,
    ): Promise<SearchResult> {
      const w = where(partition, q);
      const time = timeOrder(q);
      if (q.after && !time) throw new Error('a page position needs the (last_updated, id) order');
      const walked =
        dialect.walksDenseMatches && time && q.limit > 0 && !walkTimeIndex(q.filters)
          ? await denseWalk(partition, q, time)
          : undefined;
      if (walked === MISSED && dense) return dense(partition, q);
      const at = time && walkTimeIndex(q.filters) ? 'r.last_updated' : dialect.unindexed('r.last_updated');
      const sorts: Sql[] = time
        ? [{ sql: `${at} ${time}, r.id ${time}`, params: [] }]
        : [
            ...q.sort.map((s) => sortSql(s.key, s.descending, 'r')),
            { sql: `${dialect.unindexed('r.last_updated')} ASC, r.id ASC`, params: [] },
          ];
      const after: Sql = q.after
        ? {
            sql: ` AND (r.last_updated, r.id) ${time === 'DESC' ? '<' : '>'} (?, ?)`,
            params: [q.after.lastUpdated, q.after.id],
          }
        : { sql: '', params: [] };
      const rows =
        q.limit === 0
          ? []
          : ((walked === MISSED ? undefined : walked) ??
            (await query<PageRow>(
              `SELECT ${PAGE_COLUMNS} FROM resources r WHERE ${w.sql}${after.sql}
                 ORDER BY ${sorts.map((s) => s.sql).join(', ')} ${limitSql(q.limit)} OFFSET ?`,
              [...w.params, ...after.params, ...sorts.flatMap((s) => s.params), q.offset],
            )));
      const { matches, more } = await settle(partition, q, rows);
      if (!q.total) return { matches, more };
      const [row] = await query<{ n: number | string }>(
        `SELECT COUNT(*) AS n FROM resources r WHERE ${w.sql}`,
        w.params,
      );
      return { matches, more, total: Number(row?.n ?? 0) };
    },

    async metaInUse(partition: string, types: readonly string[], limit: number): Promise<MetaInUse> {
      const inTypes = `partition = ? AND type IN (${types.map(() => '?').join(',')})`;
      const codings = (param: string) =>
        query<{ system: string | null; code: string }>(
          `SELECT system, code FROM (SELECT DISTINCT system, code FROM idx_token
             WHERE ${inTypes} AND param = ? AND code IS NOT NULL) d ORDER BY COALESCE(system, ''), code LIMIT ?`,
          [partition, ...types, param, limit],
        );
      const profiles = await query<{ value: string }>(
        `SELECT DISTINCT value FROM idx_uri WHERE ${inTypes} AND param = '_profile' ORDER BY value LIMIT ?`,
        [partition, ...types, limit],
      );
      return {
        profile: profiles.map((r) => r.value),
        tag: await codings('_tag'),
        security: await codings('_security'),
      };
    },

    async scan(
      partition: string,
      after: { type: string; id: string } | undefined,
      limit: number,
    ): Promise<ScannedResource[]> {
      return query<ScannedResource>(
        `SELECT r.type, r.id, r.version, r.content FROM resources r WHERE r.partition = ? AND r.content IS NOT NULL
           ${after ? 'AND (r.type > ? OR (r.type = ? AND r.id > ?))' : ''} ORDER BY r.type, r.id LIMIT ?`,
        [partition, ...(after ? [after.type, after.type, after.id] : []), limit],
      );
    },

    async referencedBy(
      partition: string,
      sourceType: string,
      sourceIds: string[],
      param: string | undefined,
      targetType?: string,
      bound: IncludeBound = {},
    ): Promise<SizedResource[]> {
      const out: SizedResource[] = [];
      const limit = bound.limit ?? Number.POSITIVE_INFINITY;
      const columns = sizedColumns(bound.contents === false ? 0 : INLINE);
      for (let i = 0; i < sourceIds.length && out.length < limit; i += 500) {
        const ids = sourceIds.slice(i, i + 500);
        const cap = capSql(limit - out.length);
        const rows = await query<SizedResource>(
          `SELECT ${columns} FROM resources r WHERE r.partition = ? AND r.content IS NOT NULL AND (r.type, r.id) IN (
             SELECT x.target_type, x.target_id FROM idx_reference x WHERE x.partition = ? AND x.type = ?
               ${param === undefined ? '' : 'AND x.param = ?'}
               AND x.id IN (${ids.map(() => '?').join(',')}) ${targetType ? 'AND x.target_type = ?' : ''})
             ${cap.sql}`,
          [
            partition,
            partition,
            sourceType,
            ...(param === undefined ? [] : [param]),
            ...ids,
            ...(targetType ? [targetType] : []),
            ...cap.params,
          ],
        );
        for (const r of rows) {
          r.size = Number(r.size);
          out.push(r);
        }
      }
      return out;
    },

    async referencing(
      partition: string,
      sourceType: string | undefined,
      param: string | undefined,
      targets: { type: string; id: string }[],
      bound: IncludeBound = {},
    ): Promise<SizedResource[]> {
      const out: SizedResource[] = [];
      const limit = bound.limit ?? Number.POSITIVE_INFINITY;
      const columns = sizedColumns(bound.contents === false ? 0 : INLINE);
      const byType = new Map<string, string[]>();
      for (const t of targets) {
        const ids = byType.get(t.type);
        if (ids) ids.push(t.id);
        else byType.set(t.type, [t.id]);
      }
      for (const [targetType, ids] of byType) {
        for (let i = 0; i < ids.length && out.length < limit; i += 500) {
          const chunk = ids.slice(i, i + 500);
          const cap = capSql(limit - out.length);
          const sourceCond = sourceType === undefined ? '' : 'AND x.type = ?';
          const paramCond = param === undefined ? '' : 'AND x.param = ?';
          const rows = await query<SizedResource>(
            `SELECT ${columns} FROM resources r WHERE r.partition = ? AND r.content IS NOT NULL AND (r.type, r.id) IN (
               SELECT x.type, x.id FROM idx_reference x WHERE x.partition = ? ${sourceCond} ${paramCond} AND x.target_type = ?
                 AND x.target_id IN (${chunk.map(() => '?').join(',')}))
               ${cap.sql}`,
            [
              partition,
              partition,
              ...(sourceType === undefined ? [] : [sourceType]),
              ...(param === undefined ? [] : [param]),
              targetType,
              ...chunk,
              ...cap.params,
            ],
          );
          for (const r of rows) {
            r.size = Number(r.size);
            out.push(r);
          }
        }
      }
      return out;
    },
  };
}
