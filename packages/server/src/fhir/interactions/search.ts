import { timeOrder } from '../../store/search-order.ts';
import type { SearchFilter, SearchQuery } from '../../store/types.ts';
import { compartmentFilter } from '../../vault/compartment.ts';
import type { Restriction } from '../../vault/policy.ts';
import { auditAccess, patientsSearched } from '../audit.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { responseLimit } from '../response-size.ts';
import { encodeCursor } from '../search/cursor.ts';
import { resolveIncludes } from '../search/include.ts';
import { MAX_OFFSET } from '../search/parse.ts';
import { restrictionFilter } from '../search/restrictions.ts';
import { parseVaultSearch, searchsetEntry, searchsetJson } from '../search/searchset.ts';

/**
 * search (search.html): matches of this vault only, paged with _count/_offset, `_include`/`_revinclude`
 * (with :iterate, bounded) limited to what the caller may read, granular scopes applied as filters.
 * `compartment`: a Patient compartment search (`Patient/[id]/[type]?…`, search.html#2.21.1.2): the same search
 * narrowed to that patient's compartment, its links under the compartment's path.
 */
export async function search(
  ctx: FhirContext,
  type: string,
  params: [string, string][],
  options: { strict: boolean; restrictions: Restriction[] | undefined; compartment?: string | undefined },
): Promise<string> {
  const parsed = await parseVaultSearch(ctx, type, params, options.strict);
  const { query } = parsed;
  const restriction = restrictionFilter(ctx, type, options.restrictions);
  const compartment = options.compartment === undefined ? undefined : patientCompartment(type, options.compartment);
  const filters = [...query.filters, ...(restriction ? [restriction] : []), ...(compartment ? [compartment] : [])];
  const path = options.compartment === undefined ? type : `Patient/${options.compartment}/${type}`;
  const limit = parsed.summaryCount ? 0 : query.limit;
  // `_count=0` asks for the total alone (search.html#count), like `_summary=count`.
  const wantTotal =
    limit === 0 || parsed.summaryCount || parsed.totalMode === 'accurate' || parsed.totalMode === 'estimate';
  // A page ends where its answer would pass the response limit (the store stops there, and reads no large
  // resource past it); its `next` link goes on from there.
  const room = responseLimit(ctx);
  const {
    matches: rows,
    total: counted,
    more,
  } = await ctx.store.resources.search(ctx.partition, {
    ...query,
    filters,
    // A cursor's offset counts the matches before its position; the store skips none after it.
    offset: query.after ? 0 : query.offset,
    limit: limit === 0 ? 0 : limit + 1,
    total: wantTotal,
    maxBytes: room,
  });
  const hasNext = more === true || rows.length > limit;
  const matches = rows.slice(0, limit);
  // Without a COUNT the total is still known exactly when the last page is reached — not from a page past the
  // end, whose offset says nothing about how many came before it.
  const lastPage = !hasNext && (matches.length > 0 || query.offset === 0);
  const total = counted ?? (parsed.totalMode !== 'none' && lastPage ? query.offset + matches.length : undefined);

  const used = matches.reduce((n, r) => n + r.content.length, 0);
  const included = await resolveIncludes(ctx, matches, parsed.includes, { room: room - used });
  // BALP query event (L04): the request as asked, not the results.
  const raw = new URLSearchParams(params).toString();
  const searched = patientsSearched(type, params);
  if (options.compartment !== undefined && !searched.includes(`Patient/${options.compartment}`))
    searched.push(`Patient/${options.compartment}`);
  await auditAccess(ctx, 'search-type', {
    patients: searched,
    query: { raw: `${path}?${raw}`, description: `${path}?${new URLSearchParams(parsed.applied)}` },
  });
  const links = [{ relation: 'self', url: pageUrl(ctx, path, parsed.applied, query.limit, query) }];
  if (hasNext) links.push({ relation: 'next', url: pageUrl(ctx, path, parsed.applied, query.limit, nextPage()) });
  const previous = Math.max(0, query.offset - query.limit);
  // A previous page is found by offset, which is capped; past the cap a client pages forward only.
  if (query.offset > 0 && previous <= MAX_OFFSET) {
    links.push({ relation: 'previous', url: pageUrl(ctx, path, parsed.applied, query.limit, { offset: previous }) });
  }

  /** In (last_updated, id) order the next page starts after this page's last match, at any depth; else by offset. */
  function nextPage(): Page {
    const last = matches[matches.length - 1];
    const offset = query.offset + matches.length;
    if (!timeOrder(query) || !last?.lastUpdated) return { offset };
    return { offset, after: { lastUpdated: last.lastUpdated, id: last.id } };
  }

  const entry = searchsetEntry(ctx, parsed);
  const entries = [...matches.map((r) => entry(r, 'match')), ...included.map((r) => entry(r, 'include'))];
  return searchsetJson(total, links, entries);
}

type Page = Pick<SearchQuery, 'offset' | 'after'>;

/** The filter of `type`'s resources in the patient's compartment; a type outside the compartment is 400. */
function patientCompartment(type: string, patient: string): SearchFilter {
  const filter = compartmentFilter(type, [patient]);
  if (!filter) {
    throw new FhirError(400, 'not-supported', `${type} is not a type of the Patient compartment`);
  }
  return filter;
}

/** A page's URL: `path` is the type, or a compartment's `Patient/[id]/[type]`. */
function pageUrl(ctx: FhirContext, path: string, applied: [string, string][], count: number, page: Page): string {
  const q = new URLSearchParams(applied.filter(([n]) => n !== '_count' && n !== '_offset' && n !== '_cursor'));
  q.set('_count', String(count));
  if (page.after) q.set('_cursor', encodeCursor({ offset: page.offset, after: page.after }));
  else if (page.offset > 0) q.set('_offset', String(page.offset));
  return `${ctx.base}/${path}?${q}`;
}
