import { AimClient, partitionOf } from '../../aim-client.js';
import { FhirClient, type FhirClientOptions, type TokenSource } from '../../fhir-client.js';
import type { Resource } from '../../fhir-types.js';
import type { RetryPolicy } from '../../retry.js';
import { findOwnOrganization, loadContext, type OwnOrganization } from './context.js';
import { type PlannedObservation, planObservations, type SkipReason } from './plan.js';
import { type PushFailure, pushObservations } from './push.js';
import { activeTargets } from './targets.js';

export interface ScpSyncOptions {
  /** The platform's base URL (the OAuth issuer): AIM at `<issuer>/aim`, FHIR at `<issuer>/fhir/<partition>`. */
  issuer: string;
  /** Where the vaults live when not under the issuer (CARA: another host), e.g. https://fhir.example/fhir. */
  fhirRoot?: string;
  /** Where AIM lives when not at the issuer. */
  aimBase?: string;
  tokens: TokenSource;
  fetch?: typeof fetch;
  mpiId: string;
  organization: OwnOrganization;
  /** The external system's name: the `urn:cara:external_system` tag and part of every derived id. */
  externalSystem: string;
  candidates: Resource[];
  dryRun?: boolean;
  batchSize?: number;
  retry?: Partial<RetryPolicy>;
  timeoutMs?: number;
  correlationId?: string;
  onRetry?: FhirClientOptions['onRetry'];
  signal?: AbortSignal;
}

export interface ScpSyncResult {
  accountUrn: string;
  partition: string;
  carePlan: string;
  organization: string;
  pushed: string[];
  attentionPoints: string[];
  skipped: number;
  /** Why each skipped candidate was skipped, counted. */
  skippedReasons: Partial<Record<SkipReason, number>>;
  failed: PushFailure[];
  /** With `dryRun`: what would have been pushed. */
  planned?: string[];
  correlationId: string;
}

/**
 * Seed 000 end to end: MPI id → account (AIM) → partition; the Shared Care Plan context in one search; the
 * external system's own Organization in the care team; the candidate observations that matter for the active
 * goals, as ScpExternalObservations with deterministic ids (a re-run overwrites, never duplicates); attention
 * points flagged; pushed as batches of PUTs with retries.
 */
export async function syncSharedCarePlan(o: ScpSyncOptions): Promise<ScpSyncResult> {
  const issuer = o.issuer.replace(/\/$/, '');
  const common = {
    tokens: o.tokens,
    ...(o.fetch ? { fetch: o.fetch } : {}),
    ...(o.retry ? { retry: o.retry } : {}),
    ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}),
    ...(o.onRetry ? { onRetry: o.onRetry } : {}),
  };
  const aim = new AimClient({
    ...common,
    baseUrl: o.aimBase ?? issuer,
    ...(o.correlationId ? { correlationId: o.correlationId } : {}),
  });
  const accountUrn = await aim.accountUrn(o.mpiId, o.signal ? { signal: o.signal } : {});
  const partition = partitionOf(accountUrn);
  const fhir = new FhirClient({
    ...common,
    baseUrl: `${(o.fhirRoot ?? `${issuer}/fhir`).replace(/\/$/, '')}/${partition}`,
    ...(o.correlationId ? { correlationId: o.correlationId } : {}),
  });
  const context = await loadContext(fhir);
  const organization = findOwnOrganization(context.organizations, o.organization);
  const plan = await planObservations({
    targets: activeTargets(context.goals),
    accountUrn,
    organization,
    externalSystem: o.externalSystem,
    candidates: o.candidates,
  });
  const skippedReasons: Partial<Record<SkipReason, number>> = {};
  for (const s of plan.skipped) skippedReasons[s.reason] = (skippedReasons[s.reason] ?? 0) + 1;
  const result: ScpSyncResult = {
    accountUrn,
    partition,
    carePlan: `CarePlan/${context.carePlan.id}`,
    organization: `Organization/${organization.id}`,
    pushed: [],
    attentionPoints: [],
    skipped: plan.skipped.length,
    skippedReasons,
    failed: [],
    correlationId: fhir.correlationId,
  };
  if (o.dryRun) {
    result.planned = plan.observations.map((p) => p.id);
    result.attentionPoints = attention(plan.observations, new Set(result.planned));
    return result;
  }
  const pushed = await pushObservations(
    fhir,
    plan.observations.map((p) => p.resource),
    {
      ...(o.batchSize ? { batchSize: o.batchSize } : {}),
      ...(o.retry ? { retry: o.retry } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
    },
  );
  result.pushed = pushed.pushed;
  result.failed = pushed.failed;
  result.attentionPoints = attention(plan.observations, new Set(pushed.pushed));
  return result;
}

const attention = (planned: PlannedObservation[], done: Set<string>) =>
  planned.filter((p) => p.attention && done.has(p.id)).map((p) => p.id);
