export { AccountNotFoundError, AimClient, type AimClientOptions, partitionOf } from './aim-client.js';
export {
  CarevaultError,
  ConfigurationError,
  FhirResponseError,
  OAuthError,
  type OutcomeIssue,
  TransportError,
} from './errors.js';
export {
  FhirClient,
  type FhirClientOptions,
  type FhirRequestInfo,
  type FhirResponse,
  isSafeToRepeat,
  type RequestOptions,
  type TokenSource,
} from './fhir-client.js';
export type { Bundle, BundleEntry, JsonPatchOperation, Resource, SearchParams } from './fhir-types.js';
export { newId } from './ids.js';
export { DEFAULT_RETRY, type RetryPolicy } from './retry.js';
export {
  type AccessToken,
  type ClientAuthentication,
  TokenManager,
  type TokenManagerOptions,
} from './token-manager.js';
export { parseCandidates } from './workflows/scp/candidates.js';
export { findOwnOrganization, loadContext, type OwnOrganization, ScpSyncError } from './workflows/scp/context.js';
export { type Plan, type PlannedObservation, planObservations, type SkipReason } from './workflows/scp/plan.js';
export { type PushFailure, pushObservations } from './workflows/scp/push.js';
export { type ScpSyncOptions, type ScpSyncResult, syncSharedCarePlan } from './workflows/scp/sync.js';
export { type ActiveTarget, activeTargets } from './workflows/scp/targets.js';
export { LOINC_TO_TARGET_TYPE, targetTypeOf } from './workflows/scp/terminology.js';
