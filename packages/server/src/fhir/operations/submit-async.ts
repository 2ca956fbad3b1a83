import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuditTrail } from '../../audit/trail.ts';
import type { Store } from '../../store/types.ts';
import { AsyncJobs, jobContext, ownedBy, type SubmissionJob, storeAccess } from '../async-jobs.ts';
import type { FhirContext } from '../context.ts';
import { FhirError, operationOutcome } from '../errors.ts';
import { bodyMediaType, FHIR_JSON } from '../format.ts';
import { parseFhirJson } from '../json-body.ts';
import { provenanceHeaderValue } from '../provenance-header.ts';
import { committedJob } from './submission-job-outcome.ts';

type Params = { partition: string; id?: string };
type Outcome = { status: number; body: string; provenance?: string | undefined };

/** A finished submission's outcome is kept this long after it was accepted. */
const SUBMISSION_RETENTION_MS = 24 * 3600_000;
/** Submissions of one client in one vault that may wait or run at a time: each is up to 256 MiB on disk. */
const MAX_OPEN_SUBMISSIONS = 8;

export interface AsyncSubmissionOptions {
  context(req: FastifyRequest): Promise<FhirContext>;
  /** The checks a submission passes before it is accepted (token, vault, Content-Type, Measure access). */
  admit(req: FastifyRequest<{ Params: Params }>, measureId: string | undefined): Promise<FhirContext>;
  /** The synchronous submission: stored, audited, answered. */
  submitAndAudit(ctx: FhirContext, measureId: string | undefined, body: unknown, jobId?: string): Promise<Outcome>;
  store: Store;
  audit: AuditTrail;
  jobsDir: string;
  log: { error(o: object, msg: string): void };
}

/**
 * `Prefer: respond-async` on $submit-data (seed 002, deqm-test-server): accepted before the body is parsed, the
 * body streamed to a job, 202 + Content-Location of `$submit-data-status/{job}`, which answers 202 while the job
 * runs and then what the synchronous call would have answered. Returns the preParsing hook of the submit routes.
 */
export function asyncSubmissions(app: FastifyInstance, o: AsyncSubmissionOptions) {
  const jobs = new AsyncJobs<SubmissionJob>(
    o.jobsDir,
    async (job, text, update) => {
      const ctx: FhirContext = { ...jobContext(job, o.store, o.audit), provenance: job.provenance };
      // A node that died after the commit but before recording the outcome left the job's Provenance behind.
      const earlier = await committedJob(ctx, job.id);
      if (earlier) return earlier;
      const body = parseFhirJson(text);
      const count = (body as { parameter?: unknown[] })?.parameter?.length;
      await update({ ...job, resources: typeof count === 'number' ? count : undefined });
      return o.submitAndAudit(ctx, job.measureId, body, job.id);
    },
    o.log,
  );
  jobs.start();
  app.addHook('onClose', async () => jobs.stop());

  app.get<{ Params: Params & { job: string } }>('/:partition/$submit-data-status/:job', async (req, reply) => {
    const ctx = await o.context(req);
    const job = await jobs.get(req.params.job);
    // Only the client (and person) that submitted, in the vault it submitted to, learns anything about the job.
    if (!job || !ownedBy(job, ctx)) throw new FhirError(404, 'not-found', 'no such submission');
    if (!job.result) {
      const progress =
        job.state === 'queued' ? 'queued' : `in progress${job.resources ? `: ${job.resources} parameters` : ''}`;
      return reply.code(202).header('x-progress', progress).header('retry-after', '1').send();
    }
    if (job.result.provenance) void reply.header('x-provenance', provenanceHeaderValue(job.result.provenance));
    return reply.code(job.result.status).type(FHIR_JSON).send(job.result.body);
  });

  // async.html: DELETE cancels a submission that has not started; of one that runs or ran, what it stores stays
  // (it is in the vault, audited) and only the record of its outcome goes.
  app.delete<{ Params: Params & { job: string } }>('/:partition/$submit-data-status/:job', async (req, reply) => {
    const ctx = await o.context(req);
    const job = await jobs.get(req.params.job);
    if (!job || !ownedBy(job, ctx)) throw new FhirError(404, 'not-found', 'no such submission');
    const text =
      (await jobs.cancel(job.id)) === 'cancelled'
        ? 'the submission is cancelled: nothing of it was stored'
        : 'the record of the submission is removed; what it stored stays in the vault';
    return reply
      .code(202)
      .type(FHIR_JSON)
      .send(operationOutcome('information', 'informational', text));
  });

  return async (req: FastifyRequest<{ Params: Params }>, reply: FastifyReply, payload: NodeJS.ReadableStream) => {
    if (!/\brespond-async\b/.test(String(req.headers.prefer ?? ''))) return payload;
    // The job is parsed later from the stored text, as JSON.
    if (bodyMediaType(req.headers['content-type']) !== 'json')
      throw new FhirError(415, 'not-supported', 'asynchronous submissions are taken as application/fhir+json');
    const measureId = req.params.id;
    const ctx = await o.admit(req, measureId);
    if (
      measureId !== undefined &&
      (await ctx.store.resources.current(ctx.partition, 'Measure', measureId))?.content === undefined
    ) {
      throw new FhirError(404, 'not-found', `Measure/${measureId} not found`);
    }
    const open = (await jobs.sweep(SUBMISSION_RETENTION_MS)).filter(
      (j) => ownedBy(j, ctx) && j.state !== 'completed' && j.state !== 'failed',
    );
    if (open.length >= MAX_OPEN_SUBMISSIONS)
      throw new FhirError(
        429,
        'throttled',
        `${open.length} asynchronous submissions of this client wait or run in this vault (at most ${MAX_OPEN_SUBMISSIONS}): poll them before sending more`,
        { 'retry-after': '5' },
      );
    const job = await jobs.accept(
      {
        partition: ctx.partition,
        base: ctx.base,
        measureId,
        access: storeAccess(ctx.access),
        who: ctx.who,
        provenance: ctx.provenance,
      },
      payload,
    );
    await reply
      .code(202)
      .header('content-location', `${ctx.base}/$submit-data-status/${job.id}`)
      .type(FHIR_JSON)
      .send(operationOutcome('information', 'informational', 'accepted: poll Content-Location for the outcome'));
    return reply;
  };
}
