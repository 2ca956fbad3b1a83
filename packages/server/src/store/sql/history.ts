import type { HistoryQuery, StoredVersion } from '../types.ts';
import { toVersion, type VersionRow } from './rows.ts';

/** A history row brings its content only up to this size; larger ones are read if the page keeps them. */
const INLINE = 64 * 1024;

/** A history row: without its content when that is larger than INLINE; `size` null for a deletion. */
export type HistoryRow = VersionRow & { size: number | string | null };

/**
 * The statement of a history page (http.html#history) for both stores, with `?` placeholders in the order of
 * `params`. Pages go back in time by (last_updated, type, id, version), so a page boundary is stable.
 * `key` names the statement's shape, for a cache of prepared statements.
 */
export function historySql(partition: string, q: HistoryQuery): { sql: string; params: unknown[]; key: string } {
  const where = ['v.partition = ?'];
  const params: unknown[] = [partition];
  const add = (cond: string, ...values: unknown[]) => {
    where.push(cond);
    params.push(...values);
  };
  if (q.type) add('v.type = ?', q.type);
  if (q.id) add('v.id = ?', q.id);
  if (q.since) add('v.last_updated >= ?', q.since);
  if (q.at?.beganBefore) add('v.last_updated < ?', q.at.beganBefore);
  // A version stays current until the next version of its resource; with none, it still is.
  if (q.at?.endedAfter) {
    add(
      `NOT EXISTS (SELECT 1 FROM resource_versions n WHERE n.partition = v.partition AND n.type = v.type
        AND n.id = v.id AND n.version = v.version + 1 AND n.last_updated <= ?)`,
      q.at.endedAfter,
    );
  }
  if (q.before) {
    add(
      '(v.last_updated, v.type, v.id, v.version) < (?, ?, ?, ?)',
      q.before.lastUpdated,
      q.before.type,
      q.before.id,
      q.before.version,
    );
  }
  if (!Number.isSafeInteger(q.limit) || q.limit < 0) throw new Error(`not a page size: ${q.limit}`);
  params.push(q.limit);
  return {
    sql: `SELECT v.type, v.id, v.version, v.last_updated, v.method,
        CASE WHEN octet_length(v.content) <= ${INLINE} THEN v.content END AS content, octet_length(v.content) AS size
      FROM resource_versions v
      WHERE ${where.join(' AND ')} ORDER BY v.last_updated DESC, v.type DESC, v.id DESC, v.version DESC LIMIT ?`,
    params,
    key: [q.type, q.id, q.since, q.at?.beganBefore, q.at?.endedAfter, q.before].map((x) => (x ? 1 : 0)).join(''),
  };
}

/** Runs one statement with `?` placeholders (the store's own). */
type Query = <T>(sql: string, params: unknown[]) => Promise<T[]>;

/**
 * The page's versions within `q.maxBytes` (the first always), the large contents read now; past it, one more
 * version with its `size` and without its content says the page goes on (HistoryQuery.maxBytes).
 */
export async function settleHistory(
  partition: string,
  q: HistoryQuery,
  rows: HistoryRow[],
  query: Query,
): Promise<StoredVersion[]> {
  const budget = q.maxBytes ?? Number.POSITIVE_INFINITY;
  let n = 0;
  for (let used = 0; n < rows.length; n++) {
    used += Number((rows[n] as HistoryRow).size ?? 0);
    if (used > budget && n > 0) break;
  }
  const kept = rows.slice(0, n);
  const large = kept.filter((r) => r.content === null && r.size !== null);
  const contents = new Map<string, string>();
  const key = (r: { type: string; id: string; version: number | string }) => `${r.type}/${r.id}/${r.version}`;
  for (let i = 0; i < large.length; i += 100) {
    const slice = large.slice(i, i + 100);
    const found = await query<{ type: string; id: string; version: number; content: string }>(
      `SELECT type, id, version, content FROM resource_versions WHERE partition = ?
         AND (${slice.map(() => '(type = ? AND id = ? AND version = ?)').join(' OR ')})`,
      [partition, ...slice.flatMap((r) => [r.type, r.id, r.version])],
    );
    for (const f of found) contents.set(key(f), f.content);
  }
  const versions = kept.map((r) => toVersion({ ...r, content: r.content ?? contents.get(key(r)) ?? null }));
  const past = rows[n];
  if (past) versions.push({ ...toVersion({ ...past, content: null }), size: Number(past.size ?? 0) });
  return versions;
}
