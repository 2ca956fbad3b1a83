import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { auditAccess } from '../audit.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import type { RouteHelpers, VaultParams } from '../route-helpers.ts';
import { expandValueSet, valueSetLookup } from '../value-set-expansion.ts';
import { operationParams } from './operation-params.ts';

const TAKES = new Set(['url', 'valueSetVersion', 'filter', 'offset', 'count']);

/**
 * `ValueSet/$expand` (R4 ValueSet-expand) of a ValueSet stored in this vault, by `url` (and `valueSetVersion`)
 * or on the instance: its enumerated codes (fhir/value-set-expansion.ts) with their displays, narrowed by
 * `filter` (case-insensitive, within code or display) and paged by `offset` and `count`. The caller needs read
 * access to ValueSets; each request writes an operation AuditEvent.
 */
export function expandRoutes(app: FastifyInstance, h: Pick<RouteHelpers, 'context' | 'allow' | 'idOf'>) {
  const expand = async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply, id?: string) => {
    const ctx = await h.context(req);
    h.allow(ctx, 'ValueSet', 'read');
    const params = operationParams(req);
    for (const name of params.keys()) {
      if (!TAKES.has(name)) throw bad(`$expand takes url, valueSetVersion, filter, offset and count, not ${name}`);
    }
    const url = params.get('url') ?? undefined;
    const version = params.get('valueSetVersion') ?? undefined;
    if (id !== undefined && (url !== undefined || version !== undefined)) {
      throw bad('on an instance $expand takes no url or valueSetVersion');
    }
    if (id === undefined && url === undefined) throw bad('give the ValueSet to expand: url, or ValueSet/[id]/$expand');
    const offset = whole(params.get('offset'), 'offset', 0);
    const count = whole(params.get('count'), 'count', 1000);
    const name = id === undefined ? (version === undefined ? (url as string) : `${url}|${version}`) : `ValueSet/${id}`;
    const { valueSet, codes } = await expandValueSet(valueSetLookup(ctx, '$expand'), name);
    const filter = params.get('filter')?.toLowerCase();
    const matching = filter
      ? codes.filter((c) => c.code.toLowerCase().includes(filter) || c.display?.toLowerCase().includes(filter))
      : codes;
    await auditAccess(ctx, 'operation', {
      objects: [`ValueSet/${String(valueSet.id)}`],
      query: { raw: `ValueSet/$expand?${params}`, description: '$expand' },
    });
    const page = matching.slice(offset, offset + count);
    const { expansion: _, ...definition } = valueSet;
    return reply.type(FHIR_JSON).send({
      ...definition,
      expansion: {
        identifier: `urn:uuid:${randomUUID()}`,
        timestamp: new Date().toISOString(),
        total: matching.length,
        offset,
        ...(filter ? { parameter: [{ name: 'filter', valueString: params.get('filter') }] } : {}),
        // FHIR JSON has no empty arrays.
        ...(page.length > 0 ? { contains: page } : {}),
      },
    });
  };
  for (const method of ['get', 'post'] as const) {
    app[method]<{ Params: VaultParams }>('/:partition/ValueSet/$expand', (req, reply) => expand(req, reply));
    app[method]<{ Params: VaultParams }>('/:partition/ValueSet/:id/$expand', (req, reply) =>
      expand(req, reply, h.idOf(req)),
    );
  }
}

const bad = (message: string) => new FhirError(400, 'invalid', message);

function whole(value: string | null, name: string, fallback: number): number {
  if (value === null) return fallback;
  if (!/^\d{1,6}$/.test(value)) throw bad(`${name} must be a whole number, not "${value}"`);
  return Number(value);
}
