import type { FoundResource, SearchQuery } from '../store/types.ts';
import type { FhirContext } from './context.ts';
import { FhirError } from './errors.ts';
import { parseSearch } from './search/parse.ts';

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
  const { matches } = await search({
    ...parsed.query,
    sort: [],
    limit: 2,
    offset: 0,
    total: false,
  });
  return matches.map((m) => m.id);
}
