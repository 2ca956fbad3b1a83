import type { SearchQuery } from './types.ts';

/**
 * The direction when a query's page order is (last_updated, id) — no `_sort`, or `_sort=[-]_lastUpdated` alone:
 * the order an index holds, and one a page can continue from where the last one ended (`SearchQuery.after`).
 */
export function timeOrder(q: Pick<SearchQuery, 'sort'>): 'ASC' | 'DESC' | undefined {
  if (q.sort.length === 0) return 'ASC';
  const [only] = q.sort;
  if (q.sort.length === 1 && only?.key.kind === 'lastUpdated') return only.descending ? 'DESC' : 'ASC';
  return undefined;
}
