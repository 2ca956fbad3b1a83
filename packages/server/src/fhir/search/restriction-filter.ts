import type { SearchFilter, SearchQuery, SearchResult } from '../../store/types.ts';
import { compartmentFilter } from '../../vault/compartment.ts';
import type { Restriction } from '../../vault/policy.ts';
import { parseSearch } from './parse.ts';

/**
 * A decision's restrictions (granular queries, the launch patient's compartment) as one filter: the
 * restrictions are OR-ed, the parts of one restriction AND-ed. Undefined when the decision has none.
 */
export function restrictionOf(
  base: string,
  type: string,
  restrictions: Restriction[] | undefined,
): SearchFilter | undefined {
  if (!restrictions) return undefined;
  const filters = restrictions.map((r): SearchFilter => {
    const parts: SearchFilter[] = [];
    if (r.query !== undefined) {
      parts.push(...parseSearch(type, [...new URLSearchParams(r.query)], { base, strict: true }).query.filters);
    }
    const compartment = r.patient === undefined ? undefined : compartmentFilter(type, [r.patient]);
    if (compartment) parts.push(compartment);
    return { kind: 'and', filters: parts };
  });
  return { kind: 'or', filters };
}

/** Whether the resource `type/id` is current and matches `filter`, as `search` sees the vault. */
export async function matchesById(
  search: (q: SearchQuery) => Promise<SearchResult>,
  type: string,
  id: string,
  filter: SearchFilter,
): Promise<boolean> {
  const q: SearchQuery = {
    type,
    filters: [{ kind: 'id', ids: [id] }, filter],
    sort: [],
    limit: 1,
    offset: 0,
    total: false,
  };
  return (await search(q)).matches.length > 0;
}
