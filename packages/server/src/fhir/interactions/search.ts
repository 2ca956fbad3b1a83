import type { FoundResource, SearchFilter } from '../../store/types.ts';
import { decide } from '../../vault/policy.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { type IncludeDirective, parseSearch } from '../search/parse.ts';

const MAX_INCLUDED = 1000;
const MAX_ITERATIONS = 4;

/** Granular-scope restrictions (query strings) as one OR filter that every match must also satisfy. */
export function restrictionFilter(
  ctx: FhirContext,
  type: string,
  restrictions: string[] | undefined,
): SearchFilter | undefined {
  if (!restrictions) return undefined;
  const filters = restrictions.map((q) => {
    const parsed = parseSearch(type, [...new URLSearchParams(q)], { base: ctx.base, strict: true });
    return { kind: 'and' as const, filters: parsed.query.filters };
  });
  return { kind: 'or', filters };
}

function elementsOnly(content: string, elements: string[]): string {
  const r = JSON.parse(content) as Record<string, unknown>;
  const keep: Record<string, unknown> = { resourceType: r.resourceType, id: r.id };
  const meta = { ...(r.meta as Record<string, unknown> | undefined) };
  meta.tag = [
    ...((meta.tag as unknown[]) ?? []),
    { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' },
  ];
  keep.meta = meta;
  for (const e of elements) if (e in r && e !== 'meta') keep[e] = r[e];
  return JSON.stringify(keep);
}

/**
 * search (search.html): matches of this vault only, paged with _count/_offset, `_include`/`_revinclude`
 * (with :iterate, bounded) limited to what the caller may read, granular scopes applied as filters.
 */
export async function search(
  ctx: FhirContext,
  type: string,
  params: [string, string][],
  options: { strict: boolean; restrictions: string[] | undefined },
): Promise<string> {
  const parsed = parseSearch(type, params, { base: ctx.base, strict: options.strict });
  const { query } = parsed;
  const restriction = restrictionFilter(ctx, type, options.restrictions);
  const filters = restriction ? [...query.filters, restriction] : query.filters;
  const limit = parsed.summaryCount ? 0 : query.limit;
  const wantTotal = parsed.summaryCount || parsed.totalMode === 'accurate' || parsed.totalMode === 'estimate';
  const { matches: rows, total: counted } = await ctx.store.resources.search(ctx.partition, {
    ...query,
    filters,
    limit: limit === 0 ? 0 : limit + 1,
    total: wantTotal,
  });
  const hasNext = rows.length > limit;
  const matches = rows.slice(0, limit);
  // Without a COUNT the total is still known exactly when the last page is reached.
  const total = counted ?? (parsed.totalMode !== 'none' && !hasNext ? query.offset + matches.length : undefined);

  const included = await resolveIncludes(ctx, matches, parsed.includes);
  const links = [{ relation: 'self', url: pageUrl(ctx, type, parsed.applied, query.limit, query.offset) }];
  if (hasNext)
    links.push({ relation: 'next', url: pageUrl(ctx, type, parsed.applied, query.limit, query.offset + query.limit) });
  if (query.offset > 0) {
    links.push({
      relation: 'previous',
      url: pageUrl(ctx, type, parsed.applied, query.limit, Math.max(0, query.offset - query.limit)),
    });
  }
  const entry = (r: FoundResource, mode: 'match' | 'include') =>
    `{"fullUrl":${JSON.stringify(`${ctx.base}/${r.type}/${r.id}`)},"resource":${parsed.elements && mode === 'match' ? elementsOnly(r.content, parsed.elements) : r.content},"search":{"mode":"${mode}"}}`;
  const entries = [...matches.map((r) => entry(r, 'match')), ...included.map((r) => entry(r, 'include'))];
  return `{"resourceType":"Bundle","type":"searchset"${total !== undefined ? `,"total":${total}` : ''},"link":${JSON.stringify(links)},"entry":[${entries.join(',')}]}`;
}

function pageUrl(ctx: FhirContext, type: string, applied: [string, string][], count: number, offset: number): string {
  const q = new URLSearchParams(applied.filter(([n]) => n !== '_count' && n !== '_offset'));
  q.set('_count', String(count));
  if (offset > 0) q.set('_offset', String(offset));
  return `${ctx.base}/${type}?${q}`;
}

async function resolveIncludes(
  ctx: FhirContext,
  matches: FoundResource[],
  directives: IncludeDirective[],
): Promise<FoundResource[]> {
  if (directives.length === 0 || matches.length === 0) return [];
  const key = (r: { type: string; id: string }) => `${r.type}/${r.id}`;
  const seen = new Set(matches.map(key));
  const included: FoundResource[] = [];
  const readable = new Map<string, boolean>();
  const mayRead = (type: string) => {
    let ok = readable.get(type);
    if (ok === undefined) {
      const d = decide(ctx.access, type, 'read');
      // Resources allowed only through granular scopes are left out of includes rather than filtered.
      ok = d.allowed && !d.restrictions;
      readable.set(type, ok);
    }
    return ok;
  };
  let frontier = matches;
  for (let round = 0; round <= MAX_ITERATIONS && frontier.length > 0; round++) {
    const active = directives.filter((d) => (round === 0 ? true : d.iterate));
    const found: FoundResource[] = [];
    for (const d of active) {
      if (d.reverse) {
        found.push(...(await ctx.store.resources.referencing(ctx.partition, d.sourceType, d.param, frontier)));
      } else {
        const ids = frontier.filter((r) => r.type === d.sourceType).map((r) => r.id);
        if (ids.length)
          found.push(
            ...(await ctx.store.resources.referencedBy(ctx.partition, d.sourceType, ids, d.param, d.targetType)),
          );
      }
    }
    const fresh: FoundResource[] = [];
    for (const r of found) {
      if (seen.has(key(r)) || !mayRead(r.type)) continue;
      seen.add(key(r));
      fresh.push(r);
      if (included.length + fresh.length > MAX_INCLUDED) {
        throw new FhirError(
          400,
          'too-costly',
          `more than ${MAX_INCLUDED} included resources; narrow the search or lower _count`,
        );
      }
    }
    included.push(...fresh);
    frontier = fresh;
  }
  return included;
}
