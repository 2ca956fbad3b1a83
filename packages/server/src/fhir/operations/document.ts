import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { FoundResource } from '../../store/types.ts';
import { decide, type Restriction } from '../../vault/policy.ts';
import { auditAccess, patientsOf } from '../audit.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { create } from '../interactions/create.ts';
import { read } from '../interactions/read.ts';
import { ID_RE, RESOURCE_TYPES } from '../resource-types.ts';
import { responseLimit } from '../response-size.ts';
import type { RouteHelpers, VaultParams } from '../route-helpers.ts';
import { resolveIncludes } from '../search/include.ts';
import { assertVisible, restrictionFilter } from '../search/restrictions.ts';
import { operationParams } from './operation-params.ts';

/** References a Composition may name itself (sections' entries included); more is a 400. */
const MAX_DIRECT = 1000;
/** Every reference of what is in the document, again from what that brings in (search/include.ts bounds the rounds). */
const EVERY_REFERENCE = { sourceType: '*', param: '*', iterate: true, reverse: false };

const bad = (message: string) => new FhirError(400, 'invalid', message);

/**
 * Composition `$document` (R4 composition-operation-document): a `document` Bundle of the Composition first, then
 * every resource it refers to — each of its own references (custodian, section authors and entries…), then
 * the references of those, as `_include:iterate=*` finds them — of this vault and readable by the caller (what
 * the token may not read is left out, as from a search's includes). `persist=true` also stores the Bundle
 * (Bundle create needed) and answers the stored one. Audited as an operation on the Composition's patients.
 */
export async function compositionDocument(
  ctx: FhirContext,
  id: string,
  o: { persist: boolean; restrictions: Restriction[] | undefined },
): Promise<string> {
  const { persist, restrictions } = o;
  const composition = await read(ctx, 'Composition', id);
  await assertVisible(ctx, 'Composition', id, restrictions);
  const content = composition.content as string;

  const named = referencesIn(JSON.parse(content)).filter((r) => r.type !== 'Composition' || r.id !== id);
  const start: FoundResource[] = [{ type: 'Composition', id, content }, ...(await readableReferences(ctx, named))];
  const room = responseLimit(ctx) - start.reduce((n, r) => n + r.content.length, 0);
  if (room < 0) {
    const mib = Math.round(responseLimit(ctx) / 1024 / 1024);
    throw new FhirError(
      400,
      'too-costly',
      `$document: what the Composition names is more than the ${mib} MiB an answer may hold`,
    );
  }
  const rest = await resolveIncludes(ctx, start, [EVERY_REFERENCE], { room });
  const entries = [...start, ...rest].map(
    (r) => `{"fullUrl":${JSON.stringify(`${ctx.base}/${r.type}/${r.id}`)},"resource":${r.content}}`,
  );
  const identifier = { system: 'urn:ietf:rfc:3986', value: `urn:uuid:${randomUUID()}` };
  const bundle = `{"resourceType":"Bundle","identifier":${JSON.stringify(identifier)},"type":"document","timestamp":${JSON.stringify(new Date().toISOString())},"entry":[${entries.join(',')}]}`;

  await auditAccess(ctx, 'operation', {
    objects: [`Composition/${id}/_history/${composition.version}`],
    patients: patientsOf([composition]),
    query: { raw: `Composition/${id}/$document${persist ? '?persist=true' : ''}`, description: '$document' },
  });
  if (!persist) return bundle;
  const stored = await create(ctx, 'Bundle', JSON.parse(bundle));
  return stored.content as string;
}

function booleanParam(params: URLSearchParams, name: string): boolean {
  const values = params.getAll(name);
  if (values.length > 1) throw bad(`$document: ${name} is given once`);
  if (values[0] === undefined || values[0] === 'false') return false;
  if (values[0] === 'true') return true;
  throw bad(`$document: ${name} must be true or false, not "${values[0]}"`);
}

/** The relative `Type/id` references anywhere in a resource (not those of its contained resources, nor `#…`). */
export function referencesIn(resource: Record<string, unknown>): { type: string; id: string }[] {
  const found = new Map<string, { type: string; id: string }>();
  const walk = (value: unknown): void => {
    if (Array.isArray(value)) {
      for (const v of value) walk(v);
      return;
    }
    if (typeof value !== 'object' || value === null) return;
    for (const [key, v] of Object.entries(value)) {
      if (key === 'contained') continue;
      if (key === 'reference' && typeof v === 'string') {
        const [type, id, ...more] = v.split('/');
        if (more.length === 0 && type && id && RESOURCE_TYPES.has(type) && ID_RE.test(id))
          found.set(`${type}/${id}`, { type, id });
      } else walk(v);
    }
  };
  walk(resource);
  if (found.size > MAX_DIRECT)
    throw new FhirError(400, 'too-costly', `$document: the Composition names more than ${MAX_DIRECT} resources`);
  return [...found.values()];
}

/** Those of `refs` that exist here and that the caller may read (granular scopes included); the rest left out. */
async function readableReferences(ctx: FhirContext, refs: { type: string; id: string }[]): Promise<FoundResource[]> {
  const out: FoundResource[] = [];
  for (const { type, id } of refs) {
    const d = decide(ctx.access, type, 'read');
    if (!d.allowed) continue;
    const current = await ctx.store.resources.current(ctx.partition, type, id);
    if (current?.content === undefined) continue;
    if (restrictionFilter(ctx, type, d.restrictions)) {
      try {
        await assertVisible(ctx, type, id, d.restrictions);
      } catch (err) {
        if (err instanceof FhirError && err.status === 403) continue;
        throw err;
      }
    }
    out.push({ type, id, content: current.content });
  }
  return out;
}

/** `Composition/[id]/$document`, or `Composition/$document?id=…`, by GET or POST. */
export function documentRoutes(app: FastifyInstance, h: RouteHelpers): void {
  const handler = async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply) => {
    const ctx = await h.context(req);
    const restrictions = h.allow(ctx, 'Composition', 'read');
    const params = operationParams(req);
    for (const name of params.keys())
      if (!['id', 'persist', 'graph', '_format', '_pretty'].includes(name))
        throw bad(`$document: unknown parameter ${name}`);
    if (params.has('graph')) throw new FhirError(400, 'not-supported', '$document: graph is not supported');
    const persist = booleanParam(params, 'persist');
    if (persist && req.method !== 'POST') throw bad('$document: persist=true stores a Bundle, so it is a POST');
    if (persist) h.allow(ctx, 'Bundle', 'create');
    const named = params.getAll('id');
    if (req.params.id !== undefined && named.length > 0) throw bad('on an instance $document takes no id');
    if (req.params.id === undefined && named.length !== 1)
      throw bad('$document takes the Composition: Composition/[id]/$document or one id');
    const id = req.params.id === undefined ? (named[0] as string).replace(/^Composition\//, '') : h.idOf(req);
    if (!ID_RE.test(id)) throw bad(`$document: "${named[0]}" is not a Composition id`);
    return reply.type(FHIR_JSON).send(await compositionDocument(ctx, id, { persist, restrictions }));
  };
  app.get<{ Params: VaultParams }>('/:partition/Composition/:id/$document', handler);
  app.post<{ Params: VaultParams }>('/:partition/Composition/:id/$document', handler);
  app.get<{ Params: VaultParams }>('/:partition/Composition/$document', handler);
  app.post<{ Params: VaultParams }>('/:partition/Composition/$document', handler);
}
