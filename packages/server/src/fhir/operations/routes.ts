import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Interaction, Restriction } from '../../vault/policy.ts';
import { auditAccess } from '../audit.ts';
import { responseBundle } from '../bundle/transaction.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { ID_RE } from '../resource-types.ts';
import { dataRequirements } from './data-requirements.ts';
import type { SubmissionPolicy } from './submission-policy.ts';
import { submitData } from './submit-data.ts';

type Params = { partition: string; type?: string; id?: string; vid?: string };

export interface OperationHelpers {
  context(req: FastifyRequest): Promise<FhirContext>;
  allow(ctx: FhirContext, type: string, interaction: Interaction): Restriction[] | undefined;
  idOf(req: FastifyRequest<{ Params: Params }>): string;
  requireJsonBody(req: FastifyRequest): void;
  submissionPolicy: SubmissionPolicy;
}

/** DEQM (seed 002): Measure/[id]/$submit-data and Measure/[id]/$data-requirements. */
export function measureOperations(app: FastifyInstance, h: OperationHelpers): void {
  const { context, allow, idOf, requireJsonBody } = h;
  const o = { submissionPolicy: h.submissionPolicy };
  const submit = async (req: FastifyRequest<{ Params: Params }>, reply: FastifyReply, measureId?: string) => {
    const ctx = await context(req);
    requireJsonBody(req);
    if (measureId !== undefined) {
      if (!ID_RE.test(measureId)) throw new FhirError(400, 'value', 'invalid Measure id');
      allow(ctx, 'Measure', 'read');
    }
    const { entries, results } = await submitData(ctx, measureId, req.body, o.submissionPolicy);
    await auditAccess(ctx, 'operation', {
      objects: results
        .flatMap((r) => (r.version ? [`${r.version.type}/${r.version.id}/_history/${r.version.version}`] : []))
        .slice(0, 1),
      query: { raw: `Measure/${measureId ?? ''}/$submit-data`, description: '$submit-data' },
    });
    return reply.type(FHIR_JSON).send(responseBundle(ctx.base, 'transaction', entries, results));
  };
  app.post<{ Params: Params }>('/:partition/Measure/:id/$submit-data', (req, reply) =>
    submit(req, reply, req.params.id),
  );
  app.post<{ Params: Params }>('/:partition/Measure/$submit-data', (req, reply) => submit(req, reply));
  const requirements = async (req: FastifyRequest<{ Params: Params }>, reply: FastifyReply) => {
    const ctx = await context(req);
    allow(ctx, 'Measure', 'read');
    allow(ctx, 'Library', 'search-type');
    const id = idOf(req);
    const library = await dataRequirements(ctx, id, new URLSearchParams(req.raw.url?.split('?')[1] ?? ''));
    await auditAccess(ctx, 'operation', {
      objects: [`Measure/${id}`],
      query: { raw: `Measure/${id}/$data-requirements`, description: '$data-requirements' },
    });
    return reply.type(FHIR_JSON).send(library);
  };
  app.get<{ Params: Params }>('/:partition/Measure/:id/$data-requirements', requirements);
  app.post<{ Params: Params }>('/:partition/Measure/:id/$data-requirements', requirements);
}
