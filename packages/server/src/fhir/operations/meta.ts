import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { MetaInUse } from '../../store/types.ts';
import { decide } from '../../vault/policy.ts';
import { auditAccess, patientsOfVersion } from '../audit.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { read, vread } from '../interactions/read.ts';
import { parseEtag } from '../interactions/update.ts';
import { RESOURCE_TYPES } from '../resource-types.ts';
import { ifMatchOf, type RouteHelpers, type VaultParams } from '../route-helpers.ts';
import { assertVersionVisible, assertVisible, restrictionFilter } from '../search/restrictions.ts';
import { type MetaChange, metaChangeOf, writeMeta } from './meta-change.ts';

/** Distinct tags, security labels or profiles a type-level or system-level `$meta` lists at most. */
const IN_USE_LIMIT = 1000;

/**
 * `$meta`, `$meta-add` and `$meta-delete` (R4 Resource-meta, -meta-add, -meta-delete). `$meta` answers the meta
 * of a resource or of one of its versions, or the profiles, tags and security labels in use in a type or in the
 * vault; `$meta-add` and `$meta-delete` change the sets of the current version (meta-change.ts).
 */
export function metaRoutes(app: FastifyInstance, h: RouteHelpers): void {
  const instanceMeta = async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply) => {
    const ctx = await h.context(req);
    const type = h.typeOf(req);
    const id = h.idOf(req);
    const vid = req.params.vid;
    noParameters(req);
    const restrictions = h.allow(ctx, type, vid === undefined ? 'read' : 'vread');
    const v = vid === undefined ? await read(ctx, type, id) : await vread(ctx, type, id, vid);
    await assertVisible(ctx, type, id, restrictions);
    if (vid !== undefined) await assertVersionVisible(ctx, v, restrictions);
    await auditAccess(ctx, 'operation', {
      objects: [`${type}/${id}/_history/${v.version}`],
      patients: await patientsOfVersion(ctx, v),
      query: { raw: `${type}/${id}${vid ? `/_history/${vid}` : ''}/$meta`, description: '$meta' },
    });
    const meta = (JSON.parse(v.content as string) as { meta?: Record<string, unknown> }).meta ?? {};
    return answer(reply, meta);
  };
  const typeMeta = async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply) => {
    const ctx = await h.context(req);
    const type = h.typeOf(req);
    noParameters(req);
    if (restrictionFilter(ctx, type, h.allow(ctx, type, 'search-type'))) throw narrowed(type);
    return answer(reply, await inUse(ctx, [type], `${type}/$meta`));
  };
  const systemMeta = async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply) => {
    const ctx = await h.context(req);
    noParameters(req);
    const types: string[] = [];
    for (const type of RESOURCE_TYPES) {
      const d = decide(ctx.access, type, 'search-type');
      if (!d.allowed) continue;
      if (restrictionFilter(ctx, type, d.restrictions)) throw narrowed(type);
      types.push(type);
    }
    if (types.length === 0) throw new FhirError(403, 'forbidden', 'the access token allows searching no type here');
    return answer(reply, await inUse(ctx, types, '$meta'));
  };
  const change =
    (kind: MetaChange['kind']) => async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply) => {
      const ctx = await h.context(req);
      const type = h.typeOf(req);
      const id = h.idOf(req);
      h.allow(ctx, type, 'update');
      const ifMatch = ifMatchOf(req);
      const meta = metaChangeOf(req.body, kind);
      const v = await writeMeta(ctx, type, id, meta, ifMatch === undefined ? undefined : parseEtag(ifMatch));
      const written = (JSON.parse(v.content as string) as { meta?: Record<string, unknown> }).meta ?? {};
      void reply.header('etag', `W/"${v.version}"`);
      return answer(reply, written);
    };
  const historical = () => {
    // carevault keeps every version as it was written: changing one in place would give one ETag two contents.
    throw new FhirError(400, 'not-supported', 'a version is kept as it was written; change the current one instead');
  };

  for (const method of ['get', 'post'] as const) {
    app[method]<{ Params: VaultParams }>('/:partition/$meta', systemMeta);
    app[method]<{ Params: VaultParams }>('/:partition/:type/$meta', typeMeta);
    app[method]<{ Params: VaultParams }>('/:partition/:type/:id/$meta', instanceMeta);
    app[method]<{ Params: VaultParams }>('/:partition/:type/:id/_history/:vid/$meta', instanceMeta);
  }
  app.post<{ Params: VaultParams }>('/:partition/:type/:id/$meta-add', change('add'));
  app.post<{ Params: VaultParams }>('/:partition/:type/:id/$meta-delete', change('delete'));
  app.post<{ Params: VaultParams }>('/:partition/:type/:id/_history/:vid/$meta-add', historical);
  app.post<{ Params: VaultParams }>('/:partition/:type/:id/_history/:vid/$meta-delete', historical);
}

/** `$meta` takes no input (R4 Resource-meta); only the format parameters may come along. */
function noParameters(req: FastifyRequest): void {
  const query = new URLSearchParams(req.raw.url?.split('?')[1] ?? '');
  for (const name of query.keys()) {
    if (name !== '_format' && name !== '_pretty') throw new FhirError(400, 'not-supported', `$meta takes no ${name}`);
  }
  const body = req.body as { resourceType?: unknown; parameter?: unknown[] } | undefined;
  if (req.method === 'POST' && body !== undefined && body !== null) {
    if (body.resourceType !== 'Parameters')
      throw new FhirError(400, 'invalid', 'the operation takes a Parameters body');
    if ((body.parameter ?? []).length > 0) throw new FhirError(400, 'not-supported', '$meta takes no parameters');
  }
}

const narrowed = (type: string) =>
  new FhirError(
    403,
    'forbidden',
    `$meta over ${type} needs a search of every ${type} here; the access token's scopes narrow it`,
  );

/** The profiles, tags and security labels in use in `types`, audited as the operation that lists them. */
async function inUse(ctx: FhirContext, types: string[], raw: string): Promise<Record<string, unknown>> {
  const found: MetaInUse = await ctx.store.resources.metaInUse(ctx.partition, types, IN_USE_LIMIT + 1);
  for (const [name, list] of Object.entries(found)) {
    if (list.length > IN_USE_LIMIT) {
      throw new FhirError(
        400,
        'too-costly',
        `more than ${IN_USE_LIMIT} distinct ${name} values are in use; ask for one type, or search by _${name}`,
      );
    }
  }
  await auditAccess(ctx, 'operation', { query: { raw, description: '$meta' } });
  const codings = (list: MetaInUse['tag']) =>
    list.map((c) => ({ ...(c.system !== null ? { system: c.system } : {}), code: c.code }));
  return {
    ...(found.profile.length ? { profile: found.profile } : {}),
    ...(found.security.length ? { security: codings(found.security) } : {}),
    ...(found.tag.length ? { tag: codings(found.tag) } : {}),
  };
}

function answer(reply: FastifyReply, meta: Record<string, unknown>) {
  return reply.type(FHIR_JSON).send({ resourceType: 'Parameters', parameter: [{ name: 'return', valueMeta: meta }] });
}
