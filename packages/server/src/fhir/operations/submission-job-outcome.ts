import type { FhirContext } from '../context.ts';

/** meta.tag system of the Provenance an asynchronous submission writes, coded with the job id. */
export const JOB_TAG = 'https://carevault.dev/fhir/CodeSystem/submission-job';

/**
 * The outcome of a job whose transaction committed although its node died before recording it: the job's
 * Provenance names every version written, which is what the transaction-response would have listed.
 */
export async function committedJob(
  ctx: FhirContext,
  jobId: string,
): Promise<{ status: number; body: string; provenance: string } | undefined> {
  const { matches } = await ctx.store.resources.search(ctx.partition, {
    type: 'Provenance',
    filters: [{ kind: 'token', param: '_tag', values: [{ system: JOB_TAG, code: jobId }] }],
    sort: [],
    limit: 1,
    offset: 0,
    total: false,
  });
  const found = matches[0];
  if (!found) return undefined;
  const targets = (JSON.parse(found.content) as { target?: { reference?: string }[] }).target ?? [];
  const body = {
    resourceType: 'Bundle',
    type: 'transaction-response',
    entry: targets.map((t) => ({ response: { status: '200 OK', location: t.reference } })),
  };
  return { status: 200, body: JSON.stringify(body), provenance: found.content };
}
