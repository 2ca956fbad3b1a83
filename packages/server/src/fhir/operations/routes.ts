import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuditTrail } from '../../audit/trail.ts';
import { careGaps, dataRequirements, evaluateMeasure } from '../../measure/calculate.ts';
import type { Store } from '../../store/types.ts';
import type { Interaction, Restriction } from '../../vault/policy.ts';
import { auditAccess } from '../audit.ts';
import { responseBundle } from '../bundle/results.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { ID_RE } from '../resource-types.ts';
import { operationParams } from './operation-params.ts';
import type { SubmissionPolicy } from './submission-policy.ts';
import { asyncSubmissions } from './submit-async.ts';
import { submitData } from './submit-data.ts';

type Params = { partition: string; type?: string; id?: string; vid?: string };

export interface OperationHelpers {
  context(req: FastifyRequest): Promise<FhirContext>;
  allow(ctx: FhirContext, type: string, interaction: Interaction): Restriction[] | undefined;
  idOf(req: FastifyRequest<{ Params: Params }>): string;
  requireResourceBody(req: FastifyRequest): void;
  submissionPolicy: SubmissionPolicy;
  store: Store;
  audit: AuditTrail;
  /** `<data-dir>/jobs`: asynchronous submissions. */
  jobsDir: string;
  log: { error(o: object, msg: string): void };
}

/** The Group a calculation was over (it was read for its members), for the audit event. */
const groupSubject = (params: URLSearchParams) => params.getAll('subject').filter((s) => s.startsWith('Group/'));

/** Reading a measure's logic: the Measure, its Libraries and ValueSets. */
const LOGIC = ['Measure', 'Library', 'ValueSet'];

/**
 * DEQM (seed 002): $submit-data, $data-requirements, $evaluate-measure and $care-gaps on Measure.
 * Calculation reads whole patient records, so it needs unrestricted search on what it reads: a token limited
 * to one patient's compartment or to granular queries is refused rather than answered from part of the data.
 */
export function measureOperations(app: FastifyInstance, h: OperationHelpers): void {
  const { context, allow, idOf, requireResourceBody } = h;
  const mayCalculate = (ctx: FhirContext) => (type: string) => {
    if (allow(ctx, type, 'search-type')?.length) {
      throw new FhirError(403, 'forbidden', `measure calculation needs unrestricted access to ${type}`);
    }
  };
  /** One submission, synchronous or from a job: stored, audited with every persisted resource, answered. */
  const submitAndAudit = async (ctx: FhirContext, measureId: string | undefined, body: unknown, jobId?: string) => {
    const { entries, results } = await submitData(ctx, measureId, body, h.submissionPolicy, jobId);
    const written = results.flatMap((r) =>
      r.version ? [`${r.version.type}/${r.version.id}/_history/${r.version.version}`] : [],
    );
    const provenance = ctx.provenanceWritten ? (JSON.parse(ctx.provenanceWritten) as { id: string }) : undefined;
    await auditAccess(ctx, 'operation', {
      objects: provenance ? [...written, `Provenance/${provenance.id}/_history/1`] : written,
      query: { raw: `Measure/${measureId ?? ''}/$submit-data`, description: '$submit-data' },
    });
    return {
      status: 200,
      body: responseBundle(ctx.base, 'transaction', entries, results),
      provenance: ctx.provenanceWritten,
    };
  };
  /** What is checked before a submission is accepted at all (the body is not read yet). */
  const admit = async (req: FastifyRequest<{ Params: Params }>, measureId: string | undefined) => {
    const ctx = await context(req);
    requireResourceBody(req);
    if (measureId !== undefined) {
      if (!ID_RE.test(measureId)) throw new FhirError(400, 'value', 'invalid Measure id');
      allow(ctx, 'Measure', 'read');
    }
    return ctx;
  };
  const submit = async (req: FastifyRequest<{ Params: Params }>, reply: FastifyReply, measureId?: string) => {
    const ctx = await admit(req, measureId);
    const r = await submitAndAudit(ctx, measureId, req.body);
    return reply.type(FHIR_JSON).send(r.body);
  };
  const accept = asyncSubmissions(app, {
    context,
    admit,
    submitAndAudit,
    store: h.store,
    audit: h.audit,
    jobsDir: h.jobsDir,
    log: h.log,
  });
  app.post<{ Params: Params }>('/:partition/Measure/:id/$submit-data', { preParsing: accept as never }, (req, reply) =>
    submit(req, reply, req.params.id),
  );
  app.post<{ Params: Params }>('/:partition/Measure/$submit-data', { preParsing: accept as never }, (req, reply) =>
    submit(req, reply),
  );
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
    const params = operationParams(req);
    const { report, patients } = await evaluateMeasure(ctx, id, params, mayCalculate(ctx));
    await auditAccess(ctx, 'operation', {
      objects: [`Measure/${id}`, ...groupSubject(params)],
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
      objects: [...params.getAll('measureId').map((m) => `Measure/${m}`), ...groupSubject(params)],
      patients,
      query: { raw: 'Measure/$care-gaps', description: '$care-gaps' },
    });
    return reply.type(FHIR_JSON).send(result);
  };
  app.get<{ Params: Params }>('/:partition/Measure/$care-gaps', gaps);
  app.post<{ Params: Params }>('/:partition/Measure/$care-gaps', gaps);
}
