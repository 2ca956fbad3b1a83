import { timeOrder } from '../../store/search-order.ts';
import type { FoundResource, SearchFilter, SearchQuery } from '../../store/types.ts';
import { compartmentFilter } from '../../vault/compartment.ts';
import { decide, type Restriction } from '../../vault/policy.ts';
import { auditAccess, patientsSearched } from '../audit.ts';
import { insufficientScope } from '../bearer.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { includedTooLarge, responseLimit } from '../response-size.ts';
import { encodeCursor } from '../search/cursor.ts';
import { type IncludeDirective, MAX_OFFSET, parseSearch } from '../search/parse.ts';
import { elementsOnly, summarize } from '../search/subset.ts';

const MAX_INCLUDED = 1000;
const MAX_ITERATIONS = 4;

/**
 * Scope restrictions (granular queries, the launch patient's compartment) as one filter every match must
 * also satisfy: the restrictions are OR-ed, the parts of one restriction AND-ed.
 */
export function restrictionFilter(
  ctx: FhirContext,
  type: string,
  restrictions: Restriction[] | undefined,
): SearchFilter | undefined {
  if (!restrictions) return undefined;
  const filters = restrictions.map((r): SearchFilter => {
    const parts: SearchFilter[] = [];
    if (r.query !== undefined) {
      parts.push(
        ...parseSearch(type, [...new URLSearchParams(r.query)], { base: ctx.base, strict: true }).query.filters,
      );
    }
    const compartment = r.patient === undefined ? undefined : compartmentFilter(type, r.patient);
    if (compartment) parts.push(compartment);
    return { kind: 'and', filters: parts };
  });
  return { kind: 'or', filters };
}

/** Under restricted scopes a single resource may be read only if its current version satisfies them (I12, I14). */
export async function assertVisible(
  ctx: FhirContext,
  type: string,
  id: string,
  restrictions: Restriction[] | undefined,
): Promise<void> {
  const filter = restrictionFilter(ctx, type, restrictions);
  if (!filter) return;
  const { matches } = await ctx.store.resources.search(ctx.partition, {
    type,
    filters: [{ kind: 'id', ids: [id] }, filter],
    sort: [],
    limit: 1,
    offset: 0,
    total: false,
  });
  if (matches.length === 0) throw insufficientScope(`the access token's scopes for ${type} do not cover this resource`);
}

/**
 * search (search.html): matches of this vault only, paged with _count/_offset, `_include`/`_revinclude`
 * (with :iterate, bounded) limited to what the caller may read, granular scopes applied as filters.
 */
export async function search(
  ctx: FhirContext,
  type: string,
  params: [string, string][],
  options: { strict: boolean; restrictions: Restriction[] | undefined },
): Promise<string> {
  const parsed = parseSearch(type, params, { base: ctx.base, strict: options.strict });
  const { query } = parsed;
  const restriction = restrictionFilter(ctx, type, options.restrictions);
  const filters = restriction ? [...query.filters, restriction] : query.filters;
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

  const included = await resolveIncludes(ctx, matches, parsed.includes);
  if (included.length > 0 && [...matches, ...included].reduce((n, r) => n + r.content.length, 0) > room)
    throw includedTooLarge(ctx);
  // BALP query event (L04): the request as asked, not the results.
  const raw = new URLSearchParams(params).toString();
  await auditAccess(ctx, 'search-type', {
    patients: patientsSearched(type, params),
    query: { raw: `${type}?${raw}`, description: `${type}?${new URLSearchParams(parsed.applied)}` },
  });
  const links = [{ relation: 'self', url: pageUrl(ctx, type, parsed.applied, query.limit, query) }];
  if (hasNext) links.push({ relation: 'next', url: pageUrl(ctx, type, parsed.applied, query.limit, nextPage()) });
  const previous = Math.max(0, query.offset - query.limit);
  // A previous page is found by offset, which is capped; past the cap a client pages forward only.
  if (query.offset > 0 && previous <= MAX_OFFSET) {
    links.push({ relation: 'previous', url: pageUrl(ctx, type, parsed.applied, query.limit, { offset: previous }) });
  }

  /** In (last_updated, id) order the next page starts after this page's last match, at any depth; else by offset. */
  function nextPage(): Page {
    const last = matches[matches.length - 1];
    const offset = query.offset + matches.length;
    if (!timeOrder(query) || !last?.lastUpdated) return { offset };
    return { offset, after: { lastUpdated: last.lastUpdated, id: last.id } };
  }

  const subset = (r: FoundResource, mode: 'match' | 'include') => {
    if (mode !== 'match') return r.content;
    if (parsed.elements) return elementsOnly(r.content, r.type, parsed.elements);
    return parsed.summary ? summarize(r.content, r.type, parsed.summary) : r.content;
  };
  const entry = (r: FoundResource, mode: 'match' | 'include') =>
    `{"fullUrl":${JSON.stringify(`${ctx.base}/${r.type}/${r.id}`)},"resource":${subset(r, mode)},"search":{"mode":"${mode}"}}`;
  const entries = [...matches.map((r) => entry(r, 'match')), ...included.map((r) => entry(r, 'include'))];
  // FHIR JSON has no empty arrays: a page without entries has no `entry`.
  const entryJson = entries.length ? `,"entry":[${entries.join(',')}]` : '';
  return `{"resourceType":"Bundle","type":"searchset"${total !== undefined ? `,"total":${total}` : ''},"link":${JSON.stringify(links)}${entryJson}}`;
}

type Page = Pick<SearchQuery, 'offset' | 'after'>;

function pageUrl(ctx: FhirContext, type: string, applied: [string, string][], count: number, page: Page): string {
  const q = new URLSearchParams(applied.filter(([n]) => n !== '_count' && n !== '_offset' && n !== '_cursor'));
  q.set('_count', String(count));
  if (page.after) q.set('_cursor', encodeCursor({ offset: page.offset, after: page.after }));
  else if (page.offset > 0) q.set('_offset', String(page.offset));
  return `${ctx.base}/${type}?${q}`;
}

/**
 * The resources `directives` bring in for `matches`, each passing the scope checks of a read; `keep` narrows
 * them by type before they are read-checked and counted against MAX_INCLUDED.
 */
export async function resolveIncludes(
  ctx: FhirContext,
  matches: FoundResource[],
  directives: IncludeDirective[],
  keep: (type: string) => boolean = () => true,
): Promise<FoundResource[]> {
  if (directives.length === 0 || matches.length === 0) return [];
  const key = (r: { type: string; id: string }) => `${r.type}/${r.id}`;
  const seen = new Set(matches.map(key));
  const included: FoundResource[] = [];
  const decisions = new Map<string, ReturnType<typeof decide>>();
  const decisionFor = (type: string) => {
    let d = decisions.get(type);
    if (!d) {
      d = decide(ctx.access, type, 'read');
      decisions.set(type, d);
    }
    return d;
  };
  /** Included resources pass the same scope checks as reads: denied types drop out, restricted ones are filtered. */
  const readable = async (candidates: FoundResource[]): Promise<FoundResource[]> => {
    const byType = new Map<string, FoundResource[]>();
    for (const r of candidates) {
      const list = byType.get(r.type);
      if (list) list.push(r);
      else byType.set(r.type, [r]);
    }
    const out: FoundResource[] = [];
    for (const [type, list] of byType) {
      const d = decisionFor(type);
      if (!d.allowed) continue;
      const filter = restrictionFilter(ctx, type, d.restrictions);
      if (!filter) {
        for (const r of list) out.push(r);
        continue;
      }
      // In slices: an id list is one statement parameter each.
      for (let i = 0; i < list.length; i += 500) {
        const slice = list.slice(i, i + 500);
        const { matches: visible } = await ctx.store.resources.search(ctx.partition, {
          type,
          filters: [{ kind: 'id', ids: slice.map((r) => r.id) }, filter],
          sort: [],
          limit: slice.length,
          offset: 0,
          total: false,
        });
        for (const r of visible) out.push(r);
      }
    }
    return out;
  };
  /** What the round's directives bring in for `frontier`: at most `cap` rows per lookup when given. */
  const lookup = async (active: IncludeDirective[], frontier: FoundResource[], cap?: number) => {
    const found: FoundResource[] = [];
    let capped = false;
    const add = (rows: FoundResource[]) => {
      if (cap !== undefined && rows.length >= cap) capped = true;
      for (const r of rows) found.push(r);
    };
    for (const d of active) {
      // `*` (search.html#include): any source type, any reference parameter.
      const param = d.param === '*' ? undefined : d.param;
      if (d.reverse) {
        const source = d.sourceType === '*' ? undefined : d.sourceType;
        add(await ctx.store.resources.referencing(ctx.partition, source, param, frontier, cap));
        continue;
      }
      const sources = d.sourceType === '*' ? [...new Set(frontier.map((r) => r.type))] : [d.sourceType];
      for (const source of sources) {
        const ids = frontier.filter((r) => r.type === source).map((r) => r.id);
        if (ids.length)
          add(await ctx.store.resources.referencedBy(ctx.partition, source, ids, param, d.targetType, cap));
      }
    }
    return { found, capped };
  };
  /** The readable resources of `found` not seen before; too-costly when they are more than the rest allows. */
  const freshOf = async (found: FoundResource[]) => {
    const fresh = new Map<string, FoundResource>();
    const unseen = found.filter((r) => !seen.has(key(r)) && keep(r.type));
    for (const r of await readable(unseen)) {
      fresh.set(key(r), r);
      if (included.length + fresh.size > MAX_INCLUDED) {
        throw new FhirError(
          400,
          'too-costly',
          `more than ${MAX_INCLUDED} included resources; narrow the search or lower _count`,
        );
      }
    }
    return [...fresh.values()];
  };
  let frontier = matches;
  for (let round = 0; round <= MAX_ITERATIONS && frontier.length > 0; round++) {
    const active = directives.filter((d) => (round === 0 ? true : d.iterate));
    // A lookup needs no more rows than could all be new (a patient's 50,000 Observations are not read to learn
    // that they are more than 1,000): past the rest, plus those that may be seen already, plus one. Only when a
    // capped lookup did not settle it (most of its rows seen or not readable) is the round read in full.
    const cap = MAX_INCLUDED - included.length + seen.size + 1;
    const first = await lookup(active, frontier, cap);
    let fresh = await freshOf(first.found);
    if (first.capped) fresh = await freshOf((await lookup(active, frontier)).found);
    for (const r of fresh) seen.add(key(r));
    included.push(...fresh);
    frontier = fresh;
  }
  return included;
}
