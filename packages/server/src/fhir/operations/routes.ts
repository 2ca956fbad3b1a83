import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { careGaps, dataRequirements, evaluateMeasure } from '../../measure/calculate.ts';
import type { Interaction, Restriction } from '../../vault/policy.ts';
import { auditAccess } from '../audit.ts';
import { responseBundle } from '../bundle/transaction.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { ID_RE } from '../resource-types.ts';
import { operationParams } from './operation-params.ts';
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

/** Reading a measure's logic: the Measure, its Libraries and ValueSets. */
const LOGIC = ['Measure', 'Library', 'ValueSet'];

/**
 * DEQM (seed 002): $submit-data, $data-requirements, $evaluate-measure and $care-gaps on Measure.
 * Calculation reads whole patient records, so it needs unrestricted search on what it reads: a token limited
 * to one patient's compartment or to granular queries is refused rather than answered from part of the data.
 */
export function measureOperations(app: FastifyInstance, h: OperationHelpers): void {
  const { context, allow, idOf, requireJsonBody } = h;
  const mayCalculate = (ctx: FhirContext) => (type: string) => {
    if (allow(ctx, type, 'search-type')?.length) {
      throw new FhirError(403, 'forbidden', `measure calculation needs unrestricted access to ${type}`);
    }
  };
  const submit = async (req: FastifyRequest<{ Params: Params }>, reply: FastifyReply, measureId?: string) => {
    const ctx = await context(req);
    requireJsonBody(req);
    if (measureId !== undefined) {
      if (!ID_RE.test(measureId)) throw new FhirError(400, 'value', 'invalid Measure id');
      allow(ctx, 'Measure', 'read');
    }
    const { entries, results } = await submitData(ctx, measureId, req.body, h.submissionPolicy);
    const written = results.flatMap((r) =>
      r.version ? [`${r.version.type}/${r.version.id}/_history/${r.version.version}`] : [],
    );
    const provenance = ctx.provenanceWritten ? (JSON.parse(ctx.provenanceWritten) as { id: string }) : undefined;
    await auditAccess(ctx, 'operation', {
      objects: provenance ? [...written, `Provenance/${provenance.id}/_history/1`] : written,
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
    for (const type of LOGIC) allow(ctx, type, 'read');
    const id = idOf(req);
    const library = await dataRequirements(ctx, id, operationParams(req));
    await auditAccess(ctx, 'operation', {
      objects: [`Measure/${id}`],
      query: { raw: `Measure/${id}/$data-requirements`, description: '$data-requirements' },
    });
    return reply.type(FHIR_JSON).send(library);
  };
  app.get<{ Params: Params }>('/:partition/Measure/:id/$data-requirements', requirements);
  app.post<{ Params: Params }>('/:partition/Measure/:id/$data-requirements', requirements);

  const evaluate = async (req: FastifyRequest<{ Params: Params }>, reply: FastifyReply) => {
    const ctx = await context(req);
    for (const type of LOGIC) allow(ctx, type, 'read');
    const id = idOf(req);
    const { report, patients } = await evaluateMeasure(ctx, id, operationParams(req), mayCalculate(ctx));
    await auditAccess(ctx, 'operation', {
      objects: [`Measure/${id}`],
      patients,
      query: { raw: `Measure/${id}/$evaluate-measure`, description: '$evaluate-measure' },
    });
    return reply.type(FHIR_JSON).send(report);
  };
  app.get<{ Params: Params }>('/:partition/Measure/:id/$evaluate-measure', evaluate);
  app.post<{ Params: Params }>('/:partition/Measure/:id/$evaluate-measure', evaluate);

  const gaps = async (req: FastifyRequest<{ Params: Params }>, reply: FastifyReply) => {
    const ctx = await context(req);
    for (const type of LOGIC) allow(ctx, type, 'read');
    const params = operationParams(req);
    const { result, patients } = await careGaps(ctx, params, mayCalculate(ctx));
    await auditAccess(ctx, 'operation', {
      objects: params.getAll('measureId').map((m) => `Measure/${m}`),
      patients,
      query: { raw: 'Measure/$care-gaps', description: '$care-gaps' },
    });
    return reply.type(FHIR_JSON).send(result);
  };
  app.get<{ Params: Params }>('/:partition/Measure/$care-gaps', gaps);
  app.post<{ Params: Params }>('/:partition/Measure/$care-gaps', gaps);
}
