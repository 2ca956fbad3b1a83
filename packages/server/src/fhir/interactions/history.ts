import type { FastifyInstance, FastifyReply } from 'fastify';
import type { HistoryQuery, StoredVersion } from '../../store/types.ts';
import type { Restriction } from '../../vault/policy.ts';
import { auditAccess, patientsOf } from '../audit.ts';
import { insufficientScope } from '../bearer.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { responseLimit } from '../response-size.ts';
import { type RouteHelpers, strictHandling, type VaultParams } from '../route-helpers.ts';
import { badCursor, packCursor, unpackCursor } from '../search/cursor.ts';
import { assertVisible, restrictionFilter, versionShown } from '../search/restrictions.ts';
import { parseDate } from '../search/value-parsers.ts';

export interface HistoryParams {
  type?: string | undefined;
  id?: string | undefined;
  /** The raw query string values. */
  query: Record<string, unknown>;
  /** Path below the vault base, e.g. "/Patient/1/_history". */
  path: string;
  /** `Prefer: handling=strict`: an unknown parameter is refused instead of ignored. */
  strict?: boolean | undefined;
  /** An instance's history under restricted scopes: versions that do not pass them are left out. */
  restrictions?: Restriction[] | undefined;
}

const DEFAULT_COUNT = 50;
const MAX_COUNT = 1000;

function single(query: Record<string, unknown>, name: string): string | undefined {
  const v = query[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new FhirError(400, 'invalid', `${name} may be given once`);
  return v;
}

/** `_since` of history and `$everything`: an instant (a date or dateTime is taken too), as an ISO instant. */
export function parseSince(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  // FHIR instant, or a date / dateTime with optional zone (search "_since" takes an instant).
  if (!/^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/.test(value)) {
    throw new FhirError(400, 'value', `_since "${value}" is not a FHIR instant such as 2024-01-01T00:00:00Z`);
  }
  const t = Date.parse(value.length === 4 ? `${value}-01-01` : value.length === 7 ? `${value}-01` : value);
  if (Number.isNaN(t)) throw new FhirError(400, 'value', `_since "${value}" is not a valid date`);
  return new Date(t).toISOString();
}

function parseCount(value: string | undefined): number {
  if (value === undefined) return DEFAULT_COUNT;
  if (!/^\d{1,7}$/.test(value)) throw new FhirError(400, 'value', `_count "${value}" must be a whole number`);
  return Math.max(1, Math.min(Number(value), MAX_COUNT));
}

/** The parameters of history (http.html#history), and those of every interaction (http.html#parameters). */
const KNOWN = new Set(['_count', '_since', '_at', '_list', '_cursor', '_format', '_pretty']);
/** Instants past this one are not ISO strings of four-digit years: every stored time compares below it. */
const LAST_INSTANT = '9999-12-31T23:59:59.999Z';
const instant = (ms: number) => (ms >= Date.UTC(10000, 0, 1) ? LAST_INSTANT : new Date(ms).toISOString());

/**
 * `_at` (http.html#history): versions current at some point during the period of each value, the values
 * AND-ed (`_at=ge2024&_at=lt2025` is 2024). A version is current from its own time until the next version's.
 */
function parseAt(value: unknown): HistoryQuery['at'] {
  if (value === undefined) return undefined;
  const values = Array.isArray(value) ? value : [value];
  if (values.length > 10) throw new FhirError(400, 'invalid', '_at may be given at most 10 times');
  let beganBefore: string | undefined;
  let endedAfter: string | undefined;
  const before = (t: string) => {
    if (beganBefore === undefined || t < beganBefore) beganBefore = t;
  };
  const after = (t: string) => {
    if (endedAfter === undefined || t > endedAfter) endedAfter = t;
  };
  for (const v of values) {
    if (typeof v !== 'string') throw new FhirError(400, 'invalid', '_at takes a date such as 2024-05-01');
    if (v.includes(','))
      throw new FhirError(400, 'not-supported', '_at takes one date per value; repeat _at to combine');
    const { prefix, lo, hi } = parseDate(v, '_at');
    const [start, end] = [instant(lo), instant(hi)];
    if (prefix === 'eq') {
      before(end);
      after(start);
    } else if (prefix === 'gt') after(end);
    else if (prefix === 'ge') after(start);
    else if (prefix === 'lt') before(start);
    else if (prefix === 'le') before(end);
    else throw new FhirError(400, 'not-supported', `_at: the prefix ${prefix} is not supported (eq, gt, ge, lt, le)`);
  }
  return { beganBefore, endedAfter };
}

type Cursor = NonNullable<HistoryQuery['before']>;

function encodeCursor(v: StoredVersion): string {
  return packCursor([v.lastUpdated, v.type, v.id, v.version]);
}

function decodeCursor(value: string | undefined): Cursor | undefined {
  if (value === undefined) return undefined;
  const [lastUpdated, type, id, version] = unpackCursor(value, 4);
  if (typeof lastUpdated !== 'string' || typeof type !== 'string' || typeof id !== 'string') throw badCursor();
  if (!Number.isInteger(version)) throw badCursor();
  return { lastUpdated, type, id, version: version as number };
}

const STATUS: Record<StoredVersion['method'], string> = {
  POST: '201 Created',
  PUT: '200 OK',
  PATCH: '200 OK',
  DELETE: '204 No Content',
};

/**
 * history (http.html#history) for an instance, a type or the whole vault: newest first, `_since`, `_count`
 * with a `next` link that pages back in time from a stable cursor. Built as text around the stored JSON.
 */
export async function history(ctx: FhirContext, params: HistoryParams): Promise<string> {
  const unknown = Object.keys(params.query).find((name) => !KNOWN.has(name));
  if (params.strict && unknown) throw new FhirError(400, 'not-supported', `unknown history parameter ${unknown}`);
  if (params.query._list !== undefined) throw new FhirError(400, 'not-supported', '_list is not supported in history');
  const count = parseCount(single(params.query, '_count'));
  const since = parseSince(single(params.query, '_since'));
  const at = parseAt(params.query._at);
  const before = decodeCursor(single(params.query, '_cursor'));
  const rows = await ctx.store.resources.history(ctx.partition, {
    type: params.type,
    id: params.id,
    since,
    at,
    before,
    limit: count + 1,
    maxBytes: responseLimit(ctx),
  });
  // A page ends where its answer would pass the response limit (the store stops there and marks the version
  // past it with its size); its cursor goes on from there.
  const past = rows.findIndex((v) => v.size !== undefined);
  const taken = Math.min(count, past < 0 ? rows.length : past);
  const read = rows.slice(0, taken);
  const shown = params.id ? versionShown(ctx, params.restrictions) : undefined;
  // Left out, not refused: the page's cursor still goes on from the last version read.
  const page = shown
    ? (await Promise.all(read.map(async (v) => ((await shown(v)) ? v : undefined)))).filter((v) => v !== undefined)
    : read;
  const kept = new URLSearchParams();
  if (since) kept.set('_since', since);
  for (const v of [params.query._at ?? []].flat()) kept.append('_at', String(v));
  kept.set('_count', String(count));
  const self = `${ctx.base}${params.path}?${kept}${before ? `&_cursor=${single(params.query, '_cursor')}` : ''}`;
  const links = [{ relation: 'self', url: self }];
  const last = read[read.length - 1];
  if (rows.length > taken && last) {
    links.push({ relation: 'next', url: `${ctx.base}${params.path}?${kept}&_cursor=${encodeCursor(last)}` });
  }
  const interaction = params.id ? 'history-instance' : params.type ? 'history-type' : 'history-system';
  await auditAccess(ctx, interaction, {
    objects: params.id ? [`${params.type}/${params.id}`] : undefined,
    patients: params.id && ctx.audit.enabled ? patientsOf(page) : undefined,
    query: params.id ? undefined : { raw: `${params.path}?${kept}`, description: `${params.path}?${kept}` },
  });
  const entries = page.map((v) => {
    const request = JSON.stringify({ method: v.method, url: v.method === 'POST' ? v.type : `${v.type}/${v.id}` });
    const status = v.version === 1 && v.method === 'PUT' ? '201 Created' : STATUS[v.method];
    const response = JSON.stringify({ status, etag: `W/"${v.version}"`, lastModified: v.lastUpdated });
    const resource = v.content === undefined ? '' : `,"resource":${v.content}`;
    return `{"fullUrl":${JSON.stringify(`${ctx.base}/${v.type}/${v.id}`)}${resource},"request":${request},"response":${response}}`;
  });
  return `{"resourceType":"Bundle","type":"history","link":${JSON.stringify(links)}${entries.length ? `,"entry":[${entries.join(',')}]` : ''}}`;
}

/** The three history routes: of an instance, of a type, of the vault. */
export function historyRoutes(app: FastifyInstance, h: RouteHelpers): void {
  const { context, allow, typeOf, idOf } = h;
  const send = (reply: FastifyReply, body: string) => reply.type(FHIR_JSON).send(body);
  app.get<{ Params: VaultParams }>('/:partition/:type/:id/_history', async (req, reply) => {
    const ctx = await context(req);
    const type = typeOf(req);
    const id = idOf(req);
    const restrictions = allow(ctx, type, 'history-instance');
    await assertVisible(ctx, type, id, restrictions);
    const query = req.query as Record<string, unknown>;
    const path = `/${type}/${id}/_history`;
    return send(reply, await history(ctx, { type, id, query, path, strict: strictHandling(req), restrictions }));
  });
  app.get<{ Params: VaultParams }>('/:partition/:type/_history', async (req, reply) => {
    const ctx = await context(req);
    const type = typeOf(req);
    if (restrictionFilter(ctx, type, allow(ctx, type, 'history-type')))
      throw insufficientScope('history needs scopes not narrowed to a patient or a query');
    const query = req.query as Record<string, unknown>;
    return send(reply, await history(ctx, { type, query, path: `/${type}/_history`, strict: strictHandling(req) }));
  });
  app.get<{ Params: VaultParams }>('/:partition/_history', async (req, reply) => {
    const ctx = await context(req);
    if (allow(ctx, '*', 'history-system'))
      throw insufficientScope('system history needs scopes not narrowed to a patient or a query');
    const query = req.query as Record<string, unknown>;
    return send(reply, await history(ctx, { query, path: '/_history', strict: strictHandling(req) }));
  });
}
