import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { SearchFilter, SearchQuery } from '../../store/types.ts';
import { decide } from '../../vault/policy.ts';
import { auditAccess, patientsSearched } from '../audit.ts';
import { insufficientScope } from '../bearer.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { RESOURCE_TYPES } from '../resource-types.ts';
import { type RouteHelpers, strictHandling, type VaultParams } from '../route-helpers.ts';
import { DEFAULT_COUNT, MAX_COUNT, type ParsedSearch } from '../search/parse.ts';
import { restrictionFilter } from '../search/restrictions.ts';
import { parseVaultSearch, searchsetEntry, searchsetJson } from '../search/searchset.ts';
import { decodeWalkPosition, encodeWalkPosition, type WalkPosition, walkTypes } from '../search/type-walk.ts';

/** What a search over several types cannot do: it pages by position through the types in turn. */
const REFUSED: Record<string, string> = {
  _sort: 'sort by one type: a search of several types is in the order of its types',
  _offset: 'a search of several types pages by its next links',
  _include: 'name includes in a search of one type',
  _revinclude: 'name includes in a search of one type',
};

const bad = (message: string) => new FhirError(400, 'invalid', message);

/**
 * Search of all types (R4 search.html#all, `GET [base]?…`): `_type` names the types (else every type the caller
 * may search), and every other parameter must be one that each of them has (`_id`, `_lastUpdated`, `_tag`,
 * `_profile`, `_security`, `_source`, `_list`, `_has` …, or one the named types share); one that some lack is
 * 400, whatever the handling. Pages walk the types in order, each in (lastUpdated, id) order, and `next` links
 * continue by position; `_summary`, `_elements`, `_total` and `_summary=count` as in a search of one type. Each
 * type under the caller's scopes and granular restrictions; audited as search-system.
 */
export async function searchSystem(ctx: FhirContext, params: [string, string][], strict: boolean): Promise<string> {
  let asked: string[] | undefined;
  let count = DEFAULT_COUNT;
  let position: WalkPosition | undefined;
  const rest: [string, string][] = [];
  for (const [name, value] of params) {
    const base = name.split(':')[0] as string;
    if (Object.hasOwn(REFUSED, base)) throw bad(`${name}: ${REFUSED[base]}`);
    if (name === '_type') {
      const types = value.split(',').map((t) => t.trim());
      for (const t of types) if (!RESOURCE_TYPES.has(t)) throw bad(`_type: ${t} is not an R4 resource type`);
      asked = [...new Set([...(asked ?? []), ...types])];
    } else if (name === '_count') {
      if (!/^\d{1,7}$/.test(value)) throw bad(`_count must be a whole number, not "${value}"`);
      count = Math.min(Number(value), MAX_COUNT);
    } else if (name === '_cursor') position = decodeWalkPosition(value);
    else rest.push([name, value]);
  }
  const searchable = (type: string) => decide(ctx.access, type, 'search-type');
  for (const t of asked ?? []) {
    const d = searchable(t);
    if (!d.allowed) throw insufficientScope(`_type ${t}: ${d.reason}`);
  }
  const types = asked ?? [...RESOURCE_TYPES].filter((t) => searchable(t).allowed).sort();

  // Each type's own parse: a parameter that some of the types lack would leave those unfiltered.
  const parsed = new Map<string, ParsedSearch>();
  for (const type of types) parsed.set(type, await parseVaultSearch(ctx, type, rest, strict));
  const applied = (type: string) => new Set((parsed.get(type) as ParsedSearch).applied.map(([n]) => n));
  const everyName = new Set(types.flatMap((t) => [...applied(t)]));
  for (const type of types) {
    const lacking = [...everyName].find((n) => !applied(type).has(n));
    if (lacking) throw bad(`${lacking} is not a search parameter of ${type}: name in _type only types that have it`);
  }
  const first = parsed.get(types[0] as string);

  const filtersOf = (type: string): SearchFilter[] => {
    const own = (parsed.get(type) as ParsedSearch).query.filters;
    const d = searchable(type);
    const restriction = restrictionFilter(ctx, type, d.allowed ? d.restrictions : undefined);
    return restriction ? [...own, restriction] : own;
  };
  const find = (type: string, limit: number, after?: SearchQuery['after'], maxBytes?: number) =>
    ctx.store.resources.search(ctx.partition, {
      type,
      filters: filtersOf(type),
      sort: [],
      limit,
      offset: 0,
      after,
      total: false,
      maxBytes,
    });
  const countOnly = first?.summaryCount === true || count === 0;
  const { matches, next, before } = countOnly
    ? { matches: [], next: undefined, before: 0 }
    : await walkTypes(ctx, types, find, count, position);
  let total: number | undefined = next ? undefined : before + matches.length;
  if (countOnly || first?.totalMode === 'accurate') {
    total = 0;
    for (const type of types) {
      const counted = await ctx.store.resources.search(ctx.partition, {
        type,
        filters: filtersOf(type),
        sort: [],
        limit: 0,
        offset: 0,
        total: true,
      });
      total += counted.total ?? 0;
    }
  } else if (first?.totalMode === 'none') total = undefined;

  const raw = new URLSearchParams(params).toString();
  const kept = new URLSearchParams(first?.applied ?? []);
  if (asked) kept.set('_type', asked.join(','));
  kept.set('_count', String(count));
  await auditAccess(ctx, 'search-system', {
    patients: patientsSearched(asked?.length === 1 ? (asked[0] as string) : '', params),
    query: { raw: `?${raw}`, description: `?${kept}` },
  });
  const url = (p?: WalkPosition) => `${ctx.base}?${kept}${p ? `&_cursor=${encodeWalkPosition(p)}` : ''}`;
  const links = [{ relation: 'self', url: url(position) }];
  if (next) links.push({ relation: 'next', url: url(next) });
  const entry = searchsetEntry(ctx, first ?? {});
  return searchsetJson(
    total,
    links,
    matches.map((r) => entry(r, 'match')),
  );
}

/** `GET [base]?…` and `POST [base]/_search` (a form body) of a vault. */
export function systemSearchRoutes(app: FastifyInstance, h: Pick<RouteHelpers, 'context'>): void {
  const run = async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply, form: [string, string][]) => {
    const ctx = await h.context(req);
    const query = req.raw.url?.split('?')[1];
    const params = [...(query ? new URLSearchParams(query) : []), ...form];
    return reply.type(FHIR_JSON).send(await searchSystem(ctx, params, strictHandling(req)));
  };
  app.get<{ Params: VaultParams }>('/:partition', (req, reply) => run(req, reply, []));
  app.post<{ Params: VaultParams }>('/:partition/_search', (req, reply) => {
    if (req.body !== undefined && !Array.isArray(req.body))
      throw new FhirError(415, 'not-supported', 'send _search parameters as application/x-www-form-urlencoded');
    return run(req, reply, (req.body as [string, string][] | undefined) ?? []);
  });
}
