import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { FoundResource, SearchQuery } from '../../store/types.ts';
import type { Restriction } from '../../vault/policy.ts';
import { auditAccess, patientsSearched } from '../audit.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { responseLimit } from '../response-size.ts';
import { type RouteHelpers, strictHandling, type VaultParams } from '../route-helpers.ts';
import { resolveIncludes } from '../search/include.ts';
import { restrictionFilter } from '../search/restrictions.ts';
import { parseVaultSearch, searchsetEntry, searchsetJson } from '../search/searchset.ts';
import { operationParams } from './operation-params.ts';

/**
 * Matching Observations one request may group. Every match has to be seen (a code's newest may come last), so
 * a wider search is refused with a hint to narrow it rather than read without bound.
 */
export const MAX_GROUPED = 10_000;
/** The operation orders, groups and bounds its answer itself. */
const REFUSED = new Set(['_sort', '_count', '_offset', '_cursor', '_total']);
/** "A category parameter and/or a search parameter that contains a code element in its FHIRPath expression." */
const CODED = /^(category|(combo-|component-)?code(-value-[a-z]+)?)$/;
/** Newest first: the largest `date` (effective[x]; a Period by its end), none last; then the newest version. */
const NEWEST_FIRST: SearchQuery['sort'] = [
  { key: { kind: 'index', index: 'date', param: 'date' }, descending: true },
  { key: { kind: 'lastUpdated' }, descending: true },
  { key: { kind: 'id' }, descending: false },
];

const bad = (message: string) => new FhirError(400, 'invalid', message);
const baseName = (name: string) => name.split(/[:.]/)[0] as string;

type Observation = {
  subject?: { reference?: string };
  code?: { coding?: { system?: string; code?: string }[]; text?: string };
};

/**
 * Observation `$lastn` (R4 observation-operation-lastn): of the Observations a search finds, the `max` (1 by
 * default) most recent of each code, per subject. The search must name the subject (`patient` or `subject`) and
 * a category or code; every other Observation search parameter narrows it as in a search, with `_include`,
 * `_revinclude`, `_summary` and `_elements`. One Bundle, no pages: groups in the order of their newest
 * Observation, each newest first. Audited as a search of the patients it names.
 */
export async function lastN(
  ctx: FhirContext,
  params: [string, string][],
  o: { strict: boolean; restrictions: Restriction[] | undefined },
): Promise<string> {
  let max: number | undefined;
  const search: [string, string][] = [];
  for (const [name, value] of params) {
    if (name === 'max') {
      if (max !== undefined) throw bad('$lastn: max is given once');
      if (!/^\d{1,5}$/.test(value) || Number(value) < 1)
        throw bad(`$lastn: max must be a whole number from 1, not "${value}"`);
      max = Number(value);
      continue;
    }
    if (REFUSED.has(baseName(name)) || (name === '_summary' && value === 'count'))
      throw bad(`$lastn orders, groups and sizes its answer itself: ${name} is not taken`);
    search.push([name, value]);
  }
  const named = (test: (base: string) => boolean) =>
    search.some(([name]) => test(baseName(name)) && !name.endsWith(':missing'));
  if (!named((b) => b === 'patient' || b === 'subject'))
    throw bad('$lastn needs the subject: a patient or subject parameter');
  if (!named((b) => CODED.test(b)))
    throw bad('$lastn needs a category, code or other code parameter (such as code-value-concept)');

  const parsed = await parseVaultSearch(ctx, 'Observation', search, o.strict);
  const restriction = restrictionFilter(ctx, 'Observation', o.restrictions);
  const found = await ctx.store.resources.search(ctx.partition, {
    type: 'Observation',
    filters: restriction ? [...parsed.query.filters, restriction] : parsed.query.filters,
    sort: NEWEST_FIRST,
    limit: MAX_GROUPED + 1,
    offset: 0,
    total: false,
    maxBytes: responseLimit(ctx),
  });
  if (found.more || found.matches.length > MAX_GROUPED) {
    const mib = Math.round(responseLimit(ctx) / 1024 / 1024);
    throw new FhirError(
      400,
      'too-costly',
      `$lastn groups at most ${MAX_GROUPED} matching Observations (${mib} MiB); narrow it with date, category or code`,
    );
  }
  const kept = codeGroups(found.matches).flatMap((g) => g.slice(0, max ?? 1));

  const used = kept.reduce((n, r) => n + r.content.length, 0);
  const included = await resolveIncludes(ctx, kept, parsed.includes, { room: responseLimit(ctx) - used });
  await auditAccess(ctx, 'operation', {
    patients: patientsSearched('Observation', search),
    query: {
      raw: `Observation/$lastn?${new URLSearchParams(params)}`,
      description: `Observation/$lastn?${new URLSearchParams(parsed.applied)}`,
    },
  });
  const self = new URLSearchParams(parsed.applied);
  if (max !== undefined) self.set('max', String(max));
  const entry = searchsetEntry(ctx, parsed);
  return searchsetJson(
    kept.length,
    [{ relation: 'self', url: `${ctx.base}/Observation/$lastn?${self}` }],
    [...kept.map((r) => entry(r, 'match')), ...included.map((r) => entry(r, 'include'))],
  );
}

/**
 * The groups of $lastn, in the order of their first member: per subject, Observations whose codes share a coding
 * (same system and code) — transitively, so that translations join groups — and those with a text-only code by
 * the exact text. Members keep the order given.
 */
export function codeGroups(matches: readonly FoundResource[]): FoundResource[][] {
  const parent = new Map<string, string>();
  const root = (key: string): string => {
    let r = key;
    for (let up = parent.get(r); up !== undefined && up !== r; up = parent.get(r)) r = up;
    // Path compression: later look-ups of this chain take one step.
    for (let k = key; k !== r; ) {
      const up = parent.get(k) as string;
      parent.set(k, r);
      k = up;
    }
    return r;
  };
  const firstKeys = matches.map((m) => {
    const o = JSON.parse(m.content) as Observation;
    const subject = o.subject?.reference ?? '';
    const codings = (o.code?.coding ?? []).filter((c) => typeof c.code === 'string');
    const keys = codings.length
      ? codings.map((c) => JSON.stringify([subject, c.system ?? null, c.code]))
      : [JSON.stringify([subject, o.code?.text ?? ''])];
    for (const k of keys) if (!parent.has(k)) parent.set(k, k);
    const first = root(keys[0] as string);
    for (const k of keys.slice(1)) parent.set(root(k), first);
    return keys[0] as string;
  });
  const groups = new Map<string, FoundResource[]>();
  matches.forEach((m, i) => {
    const r = root(firstKeys[i] as string);
    const group = groups.get(r);
    if (group) group.push(m);
    else groups.set(r, [m]);
  });
  return [...groups.values()];
}

/** `Observation/$lastn` by GET, or by POST with a Parameters or form body; Observation search is needed. */
export function lastNRoutes(app: FastifyInstance, h: Pick<RouteHelpers, 'context' | 'allow'>): void {
  const handler = async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply) => {
    const ctx = await h.context(req);
    const restrictions = h.allow(ctx, 'Observation', 'search-type');
    const params = [...operationParams(req)];
    return reply.type(FHIR_JSON).send(await lastN(ctx, params, { strict: strictHandling(req), restrictions }));
  };
  app.get<{ Params: VaultParams }>('/:partition/Observation/$lastn', handler);
  app.post<{ Params: VaultParams }>('/:partition/Observation/$lastn', handler);
}
