import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { search } from '../interactions/search.ts';
import { ID_RE } from '../resource-types.ts';
import type { RouteHelpers, VaultParams } from '../route-helpers.ts';
import { dateRange } from '../search/values.ts';
import { complexParams, operationParams } from './operation-params.ts';

/** LOINC 34133-9, Summary of episode note: the CCD that $docref without a type is about. */
const CCD = 'http://loinc.org|34133-9';
const TAKES = new Set(['patient', 'start', 'end', 'type', 'on-demand', '_format', '_pretty']);

const bad = (message: string) => new FhirError(400, 'invalid', message);

/** One value of `name`, or undefined; a second one is a 400. */
function once(params: URLSearchParams, name: string): string | undefined {
  const values = params.getAll(name);
  if (values.length > 1) throw bad(`$docref: ${name} is given once`);
  return values[0];
}

/**
 * US Core `DocumentReference/$docref` (Fetch DocumentReference, seed 004's US Core): the patient's current
 * DocumentReferences as the search it amounts to. With `start` and/or `end`: those whose care period
 * (`context.period`) overlaps them, of the `type` if given. With neither: the most recent one of the `type`,
 * or without a type the most recent CCD (LOINC 34133-9). This server keeps documents and assembles none on
 * demand, so `on-demand=true` is 400. Answered and audited as that search (its links page like one).
 */
export function docrefSearch(params: URLSearchParams): [string, string][] {
  for (const name of params.keys()) if (!TAKES.has(name)) throw bad(`$docref: unknown parameter ${name}`);
  const patient = once(params, 'patient')?.replace(/^Patient\//, '');
  if (patient === undefined) throw bad('$docref needs the patient');
  if (!ID_RE.test(patient)) throw bad(`$docref: "${patient}" is not a Patient id`);
  const start = once(params, 'start');
  const end = once(params, 'end');
  for (const [name, value] of [
    ['start', start],
    ['end', end],
  ] as const) {
    if (value !== undefined && !dateRange(value)) throw bad(`$docref: ${name} must be a date, not "${value}"`);
  }
  const type = once(params, 'type');
  const onDemand = once(params, 'on-demand');
  if (onDemand !== undefined && onDemand !== 'true' && onDemand !== 'false')
    throw bad(`$docref: on-demand must be true or false, not "${onDemand}"`);
  if (onDemand === 'true')
    throw new FhirError(400, 'not-supported', '$docref: this server keeps documents and assembles none on demand');

  const out: [string, string][] = [
    ['patient', `Patient/${patient}`],
    ['status', 'current'],
  ];
  if (start === undefined && end === undefined) {
    out.push(['type', type ?? CCD], ['_sort', '-date,-_lastUpdated'], ['_count', '1']);
    return out;
  }
  if (type !== undefined) out.push(['type', type]);
  if (start !== undefined) out.push(['period', `ge${start}`]);
  if (end !== undefined) out.push(['period', `le${end}`]);
  return out;
}

/** `DocumentReference/$docref` by GET, or by POST with a Parameters body; DocumentReference search needed. */
export function docrefRoutes(app: FastifyInstance, h: Pick<RouteHelpers, 'context' | 'allow'>): void {
  const handler = async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply) => {
    const ctx = await h.context(req);
    const restrictions = h.allow(ctx, 'DocumentReference', 'search-type');
    const given = operationParams(req, ['type']);
    // By POST the type is a Coding; by GET a token.
    for (const c of complexParams(req, 'type', 'valueCoding'))
      given.append('type', typeof c.system === 'string' ? `${c.system}|${String(c.code)}` : String(c.code));
    const params = docrefSearch(given);
    return reply.type(FHIR_JSON).send(await search(ctx, 'DocumentReference', params, { strict: true, restrictions }));
  };
  app.get<{ Params: VaultParams }>('/:partition/DocumentReference/$docref', handler);
  app.post<{ Params: VaultParams }>('/:partition/DocumentReference/$docref', handler);
}
