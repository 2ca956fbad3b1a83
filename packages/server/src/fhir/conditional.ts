import type { FoundResource, SearchQuery } from '../store/types.ts';
import { decide } from '../vault/policy.ts';
import { insufficientScope } from './bearer.ts';
import type { FhirContext } from './context.ts';
import { FhirError } from './errors.ts';
import { parseSearch } from './search/parse.ts';
import { chainsInScope, restrictionFilter } from './search/restrictions.ts';

/**
 * Ids of `type` matching a conditional query (`identifier=sys|v`) in this vault, at most two (enough to
 * tell none / one / several apart). Unknown parameters are errors here: a condition must not be ignored.
 */
export async function conditionalMatches(
  ctx: FhirContext,
  type: string,
  query: string,
  search: (q: SearchQuery) => Promise<{ matches: FoundResource[] }> = (q) =>
    ctx.store.resources.search(ctx.partition, q),
): Promise<string[]> {
  const params = [...new URLSearchParams(query)];
  if (params.length === 0) throw new FhirError(400, 'invalid', `the condition on ${type} is empty`);
  const parsed = parseSearch(type, params, { base: ctx.base, strict: true });
  if (parsed.query.filters.length === 0)
    throw new FhirError(400, 'invalid', `the condition on ${type} has no search criteria`);
  // A condition is a search: over what the caller may search, else its answer (none, one, several) tells of
  // resources the caller may not see.
  const d = decide(ctx.access, type, 'search-type');
  if (!d.allowed) throw insufficientScope(`the condition on ${type} is a search: ${d.reason}`);
  const filters = chainsInScope(ctx.access, ctx.base, parsed.query.filters);
  const restriction = restrictionFilter(ctx, type, d.restrictions);
  const { matches } = await search({
    ...parsed.query,
    filters: restriction ? [...filters, restriction] : filters,
    sort: [],
    limit: 2,
    offset: 0,
    total: false,
  });
  return matches.map((m) => m.id);
}
