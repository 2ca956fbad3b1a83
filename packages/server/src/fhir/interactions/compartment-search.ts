import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { RESOURCE_TYPES } from '../resource-types.ts';
import { queryParams, type RouteHelpers, searchForm, strictHandling, type VaultParams } from '../route-helpers.ts';
import { search } from './search.ts';

/** `Patient/[id]/[of]`: `type` and `id` name the compartment, `of` the type searched in it. */
type CompartmentParams = VaultParams & { type: string; of: string };

/**
 * Patient compartment search, `Patient/[id]/[type]` (search.html#2.21.1.2; fhir-kit-client's
 * compartmentSearch): the type's search in that patient's compartment. It answers as a search does whether
 * or not the patient exists — an empty searchset, not 404, so it is no test of which patients there are.
 */
export function compartmentSearchRoutes(app: FastifyInstance, h: RouteHelpers): void {
  const { context, allow, idOf } = h;
  const compartmentSearch = async (
    req: FastifyRequest<{ Params: CompartmentParams }>,
    reply: FastifyReply,
    params: [string, string][],
  ) => {
    const ctx = await context(req);
    const { type: compartment, of } = req.params;
    if (of.startsWith('$'))
      throw new FhirError(400, 'not-supported', `${req.method} ${compartment}/{id}/${of}: no such operation here`);
    if (!RESOURCE_TYPES.has(compartment))
      throw new FhirError(404, 'not-supported', `${compartment} is not an R4 resource type`);
    if (compartment !== 'Patient') {
      throw new FhirError(400, 'not-supported', `only the Patient compartment is searched here, not ${compartment}'s`);
    }
    const patient = idOf(req);
    if (!RESOURCE_TYPES.has(of)) throw new FhirError(404, 'not-supported', `${of} is not an R4 resource type`);
    const restrictions = allow(ctx, of, 'search-type');
    const answer = await search(ctx, of, params, { strict: strictHandling(req), restrictions, compartment: patient });
    return reply.type(FHIR_JSON).send(answer);
  };
  app.get<{ Params: CompartmentParams }>('/:partition/:type/:id/:of', (req, reply) =>
    compartmentSearch(req, reply, queryParams(req)),
  );
  app.post<{ Params: CompartmentParams }>('/:partition/:type/:id/:of/_search', (req, reply) =>
    compartmentSearch(req, reply, [...queryParams(req), ...searchForm(req)]),
  );
}
