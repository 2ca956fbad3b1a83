import { EVENT } from '../../audit/balp.ts';
import { auditOf } from '../audit.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';

export type SubmissionDecision = { allowed: true } | { allowed: false; reason: string };

/** What a submission is about, as the policy sees it. */
export interface Submission {
  /** The reporter Organization (from the request or this vault), if it could be found. */
  reporter: Record<string, unknown> | undefined;
  /** MeasureReport.reporter.reference as sent. */
  reporterReference: string | undefined;
  /** MeasureReport.measure as sent. */
  measure: string | undefined;
}

/**
 * Who may submit quality data on behalf of whom: seed 002's "program server" step (never built there).
 * The built-in rule, or an external program server (program-server.ts); either answers allow or deny.
 */
export interface SubmissionPolicy {
  /** Named in the audit event: `built-in` or the program server's URL. */
  readonly name: string;
  decide(ctx: FhirContext, submission: Submission): Promise<SubmissionDecision>;
}

/** OIDs an Organization carries as `urn:oid:…` identifier values (system urn:ietf:rfc:3986 or none). */
export const oidsOf = (org: Record<string, unknown> | undefined): string[] =>
  ((org?.identifier as { value?: string }[] | undefined) ?? []).flatMap((i) =>
    i.value?.startsWith('urn:oid:') ? [i.value.slice('urn:oid:'.length)] : [],
  );

/**
 * Default rule: the reporter must be an Organization whose OID identifier is the organization the token's
 * client is registered for (IUA subject_organization_id) — a clinic submits for itself, not for others.
 */
export const sameOrganization: SubmissionPolicy = {
  name: 'built-in',
  async decide(ctx, { reporter }) {
    // The client's registered organization: not one its token names for its user (an aggregator's professional).
    const own = ctx.access.organizationOid;
    if (!own) return { allowed: false, reason: 'the client is not registered for an organization (--org-oid)' };
    if (!reporter) return { allowed: false, reason: 'MeasureReport.reporter must name the submitting Organization' };
    if (!oidsOf(reporter).includes(own)) {
      return {
        allowed: false,
        reason: `the client may not submit on behalf of this Organization (its OID is not ${own})`,
      };
    }
    return { allowed: true };
  },
};

const PROGRAM_AUTHORIZATION = {
  system: 'https://carevault.dev/fhir/CodeSystem/audit-subtype',
  code: 'program-authorization',
  display: 'Program authorization of a quality-data submission',
};

/**
 * Asks the policy and records its answer as an AuditEvent either way (seed 002: "an AuditEvent either way"),
 * besides the event of the token check. A policy that cannot answer (program server down) is a 503 and an
 * event with outcome 8; nothing is stored after a refusal.
 */
export async function assertMaySubmit(policy: SubmissionPolicy, ctx: FhirContext, submission: Submission) {
  let decision: SubmissionDecision;
  let failure: unknown;
  try {
    decision = await policy.decide(ctx, submission);
  } catch (err) {
    failure = err;
    decision = { allowed: false, reason: `the program server could not be asked (${policy.name})` };
  }
  if (ctx.audit.enabled) {
    const event = auditOf(ctx, 'operation', {
      objects: submission.reporterReference ? [submission.reporterReference] : undefined,
      outcome: decision.allowed ? '0' : failure ? '8' : '4',
      outcomeDesc: decision.allowed ? `allowed by ${policy.name}` : decision.reason,
      query: { raw: `$submit-data for ${submission.reporterReference ?? '(no reporter)'}`, description: policy.name },
    });
    await ctx.audit.record({ ...event, type: EVENT.rest, subtype: PROGRAM_AUTHORIZATION });
  }
  if (failure) {
    throw failure instanceof FhirError
      ? failure
      : new FhirError(503, 'transient', 'the program server is unavailable; nothing was stored, try again later');
  }
  if (!decision.allowed) throw new FhirError(403, 'forbidden', decision.reason);
}
