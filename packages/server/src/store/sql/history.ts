import type { HistoryQuery } from '../types.ts';

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
    sql: `SELECT v.type, v.id, v.version, v.last_updated, v.method, v.content FROM resource_versions v
      WHERE ${where.join(' AND ')} ORDER BY v.last_updated DESC, v.type DESC, v.id DESC, v.version DESC LIMIT ?`,
    params,
    key: [q.type, q.id, q.since, q.at?.beganBefore, q.at?.endedAfter, q.before].map((x) => (x ? 1 : 0)).join(''),
  };
}
