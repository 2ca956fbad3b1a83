import { limitBody } from '@carevault/sdk';
import type { SubmissionDecision, SubmissionPolicy } from './submission-policy.ts';

const TIMEOUT_MS = 5_000;

/**
 * An external program server (seed 002): asked, for every submission, whether this client (and its
 * organization, and its user) may submit for this Organization. Contract (docs/quality-measures.md):
 *
 *   POST <url>  Content-Type: application/json
 *   { "client_id", "client_organization", "user", "vault", "measure",
 *     "organization": { "reference", "identifier": [{ "system", "value" }], "name" } }
 *   → 200 { "allow": true } | 200 { "allow": false, "reason": "…" }
 *
 * Any other answer (status, shape, timeout, refused connection) throws: the submission fails with 503.
 */
export function programServer(url: string, fetchImpl: typeof fetch): SubmissionPolicy {
  return {
    name: url,
    async decide(ctx, s): Promise<SubmissionDecision> {
      const body = {
        client_id: ctx.who.clientId ?? null,
        client_organization: ctx.access.organizationOid ?? null,
        user: ctx.who.user?.id ?? null,
        vault: ctx.partition,
        measure: s.measure ?? null,
        organization: {
          reference: s.reporterReference ?? null,
          identifier: (s.reporter?.identifier as unknown[] | undefined) ?? [],
          name: typeof s.reporter?.name === 'string' ? s.reporter.name : null,
        },
      };
      const res = await fetchImpl(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      const answer = res.ok
        ? ((await limitBody(res, 64 * 1024)
            .json()
            .catch(() => undefined)) as { allow?: unknown; reason?: unknown })
        : undefined;
      if (res.status !== 200 || typeof answer?.allow !== 'boolean') {
        throw new Error(`program server answered ${res.status} without a decision`);
      }
      if (answer.allow) return { allowed: true };
      const reason =
        typeof answer.reason === 'string' && answer.reason ? answer.reason.slice(0, 300) : 'no reason given';
      return { allowed: false, reason: `the program server refused: ${reason}` };
    },
  };
}
