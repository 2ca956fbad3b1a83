import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { SearchFilter, SearchQuery, SearchResult } from '../../store/types.ts';
import { compartmentFilter, inPatientCompartment } from '../../vault/compartment.ts';
import { decide } from '../../vault/policy.ts';
import { auditAccess } from '../audit.ts';
import { insufficientScope } from '../bearer.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { parseSince } from '../interactions/history.ts';
import { read } from '../interactions/read.ts';
import { RESOURCE_TYPES } from '../resource-types.ts';
import { responseLimit } from '../response-size.ts';
import { type RouteHelpers, strictHandling, type VaultParams } from '../route-helpers.ts';
import { resolveIncludes } from '../search/include.ts';
import { parseSearch } from '../search/parse.ts';
import { assertVisible, restrictionFilter } from '../search/restrictions.ts';
import { searchsetEntry, searchsetJson } from '../search/searchset.ts';
import { decodeWalkPosition, encodeWalkPosition, type WalkPosition, walkTypes } from '../search/type-walk.ts';
import { dateRange } from '../search/values.ts';
import { operationParams } from './operation-params.ts';

const DEFAULT_COUNT = 100;
const MAX_COUNT = 1000;

/** Patient first, then the compartment's types by name (the order a page walks them in). */
const COMPARTMENT_TYPES = [
  'Patient',
  ...[...RESOURCE_TYPES].filter((t) => t !== 'Patient' && inPatientCompartment(t)).sort(),
];

/**
 * The types of R4's SearchParameter clinical-date (`date`): what `start` and `end` narrow, by that parameter.
 * The operation's "care dates" name no element; the other types have no care date to judge and come whole, as
 * in Blaze. A resource of these types without the date is left out, as a `date` search leaves it out.
 */
const CLINICAL_DATE_TYPES = new Set([
  'AllergyIntolerance',
  'CarePlan',
  'CareTeam',
  'ClinicalImpression',
  'Composition',
  'Consent',
  'DiagnosticReport',
  'Encounter',
  'EpisodeOfCare',
  'FamilyMemberHistory',
  'Flag',
  'Immunization',
  'List',
  'Observation',
  'Procedure',
  'RiskAssessment',
  'SupplyRequest',
]);
const DATE_RE = /^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$/;

const bad = (message: string) => new FhirError(400, 'invalid', message);

/** `start` / `end` (type date): a date of any precision, given once. */
function careDate(name: string, value: string, previous: string | undefined): string {
  if (previous !== undefined) throw bad(`${name} is given once`);
  if (!DATE_RE.test(value) || !dateRange(value))
    throw new FhirError(400, 'value', `${name} must be a date such as 2020, 2020-03 or 2020-03-06, not "${value}"`);
  return value;
}

/**
 * Patient `$everything` (R4 patient-operation-everything): the patient, every resource of its compartment the
 * caller may search, and the resources they refer to outside it (practitioners, organizations, locations,
 * medications…) that the caller may read. Parameters `_since`, `_type`, `_count`, and `start` / `end` (care
 * dates, inclusive at their precision: the clinical-date types whose date overlaps them). Pages walk the types
 * in a fixed order, each in (lastUpdated, id) order, and `next` links continue by position. Each page is
 * audited as a disclosure of the patient's record.
 */
export async function patientEverything(
  ctx: FhirContext,
  patient: string,
  params: URLSearchParams,
  strict: boolean,
): Promise<string> {
  let since: string | undefined;
  let from: string | undefined;
  let to: string | undefined;
  let asked: string[] | undefined;
  let count = DEFAULT_COUNT;
  let position: WalkPosition | undefined;
  for (const [name, value] of params) {
    if (name === '_since') since = parseSince(value);
    else if (name === '_type') {
      const types = value.split(',').map((t) => t.trim());
      if (types.length > RESOURCE_TYPES.size) throw bad('_type names each type once');
      for (const t of types) if (!RESOURCE_TYPES.has(t)) throw bad(`_type: ${t} is not an R4 resource type`);
      asked = [...new Set([...(asked ?? []), ...types])];
    } else if (name === '_count') {
      if (!/^\d{1,7}$/.test(value) || Number(value) < 1)
        throw bad(`_count must be a whole number from 1, not "${value}"`);
      count = Math.min(Number(value), MAX_COUNT);
    } else if (name === '_cursor') position = decodeWalkPosition(value);
    else if (name === 'start') from = careDate(name, value, from);
    else if (name === 'end') to = careDate(name, value, to);
    else if (strict && !['_format', '_pretty'].includes(name))
      throw new FhirError(400, 'not-supported', `unknown $everything parameter ${name}`);
  }

  if (from && to && (dateRange(from) as [number, number])[0] >= (dateRange(to) as [number, number])[1])
    throw bad(`start ${from} is after end ${to}`);
  const narrowing: [string, string][] = [];
  if (since) narrowing.push(['_lastUpdated', `ge${since}`]);
  const care: [string, string][] = [];
  if (from) care.push(['date', `ge${from}`]);
  if (to) care.push(['date', `le${to}`]);

  // Types the caller may search: all of the compartment's, or those asked for, each of which must be allowed.
  const searchable = (type: string) => decide(ctx.access, type, 'search-type');
  const types = COMPARTMENT_TYPES.filter((t) => (asked ? asked.includes(t) : searchable(t).allowed));
  for (const t of asked ?? []) {
    const d = searchable(t);
    if (!d.allowed && inPatientCompartment(t)) throw insufficientScope(`_type ${t}: ${d.reason}`);
  }
  const find = (type: string, limit: number, after?: SearchQuery['after'], maxBytes?: number) => {
    const d = searchable(type);
    if (!d.allowed) return Promise.resolve({ matches: [] } as SearchResult);
    const filters: SearchFilter[] = [compartmentFilter(type, [patient]) as SearchFilter];
    const restriction = restrictionFilter(ctx, type, d.restrictions);
    if (restriction) filters.push(restriction);
    const narrow = CLINICAL_DATE_TYPES.has(type) ? [...narrowing, ...care] : narrowing;
    if (narrow.length > 0) filters.push(...parseSearch(type, narrow, { base: ctx.base, strict: true }).query.filters);
    const query = { type, filters, sort: [], limit, offset: 0, after, total: false, maxBytes };
    return ctx.store.resources.search(ctx.partition, query);
  };
  const { matches, next, before } = await walkTypes(ctx, types, find, count, position);

  // What the page's resources refer to outside the compartment, as `_include=*:*` finds it, read-checked.
  const outside = (type: string) => !inPatientCompartment(type) && (!asked || asked.includes(type));
  const everyReference = { sourceType: '*', param: '*', iterate: false, reverse: false };
  const included = await resolveIncludes(ctx, matches, [everyReference], {
    room: responseLimit(ctx) - matches.reduce((n, r) => n + r.content.length, 0),
    keep: outside,
  });

  const kept = new URLSearchParams();
  if (since) kept.set('_since', since);
  if (from) kept.set('start', from);
  if (to) kept.set('end', to);
  if (asked) kept.set('_type', asked.join(','));
  kept.set('_count', String(count));
  const url = (p?: WalkPosition) =>
    `${ctx.base}/Patient/${patient}/$everything?${kept}${p ? `&_cursor=${encodeWalkPosition(p)}` : ''}`;
  await auditAccess(ctx, 'operation', {
    objects: [`Patient/${patient}`],
    patients: [`Patient/${patient}`],
    query: { raw: `Patient/${patient}/$everything?${kept}`, description: '$everything' },
  });
  const links = [{ relation: 'self', url: url(position) }];
  if (next) links.push({ relation: 'next', url: url(next) });
  const entry = searchsetEntry(ctx, {});
  const entries = [...matches.map((r) => entry(r, 'match')), ...included.map((r) => entry(r, 'include'))];
  return searchsetJson(next ? undefined : before + matches.length, links, entries);
}

/** `Patient/[id]/$everything` by GET, or by POST with a Parameters body; the Patient must be readable. */
export function everythingRoutes(app: FastifyInstance, h: RouteHelpers): void {
  const everything = async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply) => {
    const ctx = await h.context(req);
    const id = h.idOf(req);
    const restrictions = h.allow(ctx, 'Patient', 'read');
    await read(ctx, 'Patient', id);
    await assertVisible(ctx, 'Patient', id, restrictions);
    const params = operationParams(req);
    return reply.type(FHIR_JSON).send(await patientEverything(ctx, id, params, strictHandling(req)));
  };
  app.get<{ Params: VaultParams }>('/:partition/Patient/:id/$everything', everything);
  app.post<{ Params: VaultParams }>('/:partition/Patient/:id/$everything', everything);
}
