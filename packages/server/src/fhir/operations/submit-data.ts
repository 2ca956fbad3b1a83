import { decide } from '../../vault/policy.ts';
import type { EntryRequest } from '../bundle/entries.ts';
import type { EntryResult } from '../bundle/results.ts';
import { runTransaction } from '../bundle/transaction.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { ID_RE, RESOURCE_TYPES } from '../resource-types.ts';
import { assertVisible } from '../search/restrictions.ts';
import { JOB_TAG } from './submission-job-outcome.ts';
import { assertMaySubmit, type SubmissionPolicy } from './submission-policy.ts';
import { serverProvenance } from './submission-provenance.ts';

const UPDATE_TYPE = 'http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-submitDataUpdateType';
type Resource = Record<string, unknown> & { resourceType?: string; id?: string };

/** Parameters{measureReport (or DEQM's `measurereport`, X9), resource*} → the MeasureReport and the resources. */
function unpack(body: unknown): { report: Resource; resources: Resource[] } {
  const params = body as { resourceType?: string; parameter?: { name?: string; resource?: Resource }[] };
  if (params?.resourceType !== 'Parameters' || !Array.isArray(params.parameter)) {
    throw new FhirError(400, 'invalid', '$submit-data takes a Parameters resource');
  }
  const reports = params.parameter.filter((p) => p.name === 'measureReport' || p.name === 'measurereport');
  if (reports.length !== 1 || reports[0]?.resource?.resourceType !== 'MeasureReport') {
    throw new FhirError(
      400,
      'invalid',
      '$submit-data needs exactly one measureReport parameter holding a MeasureReport',
    );
  }
  const others = params.parameter.filter((p) => p.name !== 'measureReport' && p.name !== 'measurereport');
  for (const p of others) {
    if (
      p.name !== 'resource' ||
      typeof p.resource?.resourceType !== 'string' ||
      !RESOURCE_TYPES.has(p.resource.resourceType)
    ) {
      throw new FhirError(400, 'invalid', `unexpected parameter "${String(p.name)}": only measureReport and resource`);
    }
  }
  return { report: reports[0]?.resource as Resource, resources: others.map((p) => p.resource as Resource) };
}

/**
 * Measure/[id]/$submit-data (DEQM 3.1 datax, M01–M04): stores the data-collection MeasureReport and its
 * resources in one transaction (with X-Provenance when sent), after the submission policy allowed the reporter.
 */
export async function submitData(
  ctx: FhirContext,
  measureId: string | undefined,
  body: unknown,
  policy: SubmissionPolicy,
  jobId?: string,
): Promise<{ entries: EntryRequest[]; results: EntryResult[] }> {
  const { report, resources } = unpack(body);
  if (report.type !== 'data-collection') {
    throw new FhirError(400, 'invalid', 'the MeasureReport of a submission has type data-collection');
  }
  const updateType = ((report.extension as { url?: string; valueCode?: string }[] | undefined) ?? []).find(
    (e) => e.url === UPDATE_TYPE,
  )?.valueCode;
  if (updateType !== undefined && updateType !== 'snapshot' && updateType !== 'incremental') {
    throw new FhirError(400, 'invalid', 'submitDataUpdateType is snapshot or incremental');
  }
  if (measureId !== undefined) {
    const measure = await ctx.store.resources.current(ctx.partition, 'Measure', measureId);
    if (measure?.content === undefined) throw new FhirError(404, 'not-found', `Measure/${measureId} not found`);
    // Submitting to a Measure is acting on it: a granular Measure scope that does not cover it refuses, as its read.
    const d = decide(ctx.access, 'Measure', 'read');
    await assertVisible(ctx, 'Measure', measureId, d.allowed ? d.restrictions : undefined);
    const canonical = (JSON.parse(measure.content) as { url?: string }).url;
    const named = String(report.measure ?? '');
    if (named !== `Measure/${measureId}` && (canonical === undefined || named.split('|')[0] !== canonical)) {
      throw new FhirError(400, 'invalid', `MeasureReport.measure does not name Measure/${measureId}`);
    }
  }
  const reporterRef = (report.reporter as { reference?: string } | undefined)?.reference;
  const reporterId = /^Organization\/([A-Za-z0-9\-.]{1,64})$/.exec(reporterRef ?? '')?.[1];
  let reporter = resources.find((r) => r.resourceType === 'Organization' && r.id === reporterId);
  if (!reporter && reporterId) {
    const stored = await ctx.store.resources.current(ctx.partition, 'Organization', reporterId);
    reporter = stored?.content ? (JSON.parse(stored.content) as Resource) : undefined;
  }
  await assertMaySubmit(policy, ctx, {
    reporter,
    reporterReference: reporterRef,
    measure: typeof report.measure === 'string' ? report.measure : undefined,
  });
  // Every submission gets its Provenance (seed 002): the client's X-Provenance, else one built from the token.
  ctx.provenance ??= serverProvenance(ctx, reporterRef);
  // An asynchronous submission's Provenance carries its job id, so a resumed job can tell it was committed.
  if (jobId) ctx.provenance = { ...ctx.provenance, meta: { tag: [{ system: JOB_TAG, code: jobId }] } };
  // Resources with an id keep it (PUT), as deqm-test-server does; others get one (POST).
  const entries: EntryRequest[] = [report, ...resources].map((resource, index) => {
    const type = resource.resourceType as string;
    const id = typeof resource.id === 'string' && ID_RE.test(resource.id) ? resource.id : undefined;
    return id ? { index, method: 'PUT', type, id, resource } : { index, method: 'POST', type, resource };
  });
  return { entries, results: await runTransaction(ctx, entries, false) };
}
