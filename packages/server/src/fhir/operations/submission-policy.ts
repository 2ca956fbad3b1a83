import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';

/**
 * Who may submit quality data on behalf of whom (seed 002's "program server" step, never built there).
 * A pluggable rule: given the submission's reporter Organization, allow or refuse with a reason.
 */
export type SubmissionPolicy = (
  ctx: FhirContext,
  reporter: Record<string, unknown> | undefined,
) => Promise<{ allowed: true } | { allowed: false; reason: string }>;

/** OIDs an Organization carries as `urn:oid:…` identifier values (system urn:ietf:rfc:3986 or none). */
const oidsOf = (org: Record<string, unknown> | undefined): string[] =>
  ((org?.identifier as { value?: string }[] | undefined) ?? []).flatMap((i) =>
    i.value?.startsWith('urn:oid:') ? [i.value.slice('urn:oid:'.length)] : [],
  );

/**
 * Default rule: the reporter must be an Organization whose OID identifier is the organization the token's
 * client is registered for (IUA subject_organization_id) — a clinic submits for itself, not for others.
 */
export const sameOrganization: SubmissionPolicy = async (ctx, reporter) => {
  const own = ctx.who.orgOid;
  if (!own) return { allowed: false, reason: 'the client is not registered for an organization (--org-oid)' };
  if (!reporter) return { allowed: false, reason: 'MeasureReport.reporter must name the submitting Organization' };
  if (!oidsOf(reporter).includes(own)) {
    return {
      allowed: false,
      reason: `the client may not submit on behalf of this Organization (its OID is not ${own})`,
    };
  }
  return { allowed: true };
};

export async function assertMaySubmit(
  policy: SubmissionPolicy,
  ctx: FhirContext,
  reporter: Record<string, unknown> | undefined,
) {
  const d = await policy(ctx, reporter);
  if (!d.allowed) throw new FhirError(403, 'forbidden', d.reason);
}
