export { AccountNotFoundError, AimClient, type AimClientOptions, partitionOf } from './aim-client.js';
export { ByteBudget, DEFAULT_MAX_RESPONSE_BYTES, limitBody, limitedFetch } from './body-limit.js';
export {
  CarevaultError,
  ConfigurationError,
  FhirResponseError,
  OAuthError,
  type OutcomeIssue,
  ResponseTooLargeError,
  TransportError,
} from './errors.js';
export {
  FhirClient,
  type FhirClientOptions,
  type FhirRequestInfo,
  type FhirResponse,
  type RequestOptions,
  type TokenSource,
} from './fhir-client.js';
export type {
  Bundle,
  BundleEntry,
  JsonPatchOperation,
  OperationOutcome,
  Resource,
  SearchParams,
} from './fhir-types.js';
export { newId } from './ids.js';
export { DEFAULT_RETRY, type RetryPolicy } from './retry.js';
export { isSafeToRepeat } from './safe-to-repeat.js';
export {
  type AccessToken,
  type ClientAuthentication,
  TokenManager,
  type TokenManagerOptions,
} from './token-manager.js';
export {
  type BulkExport,
  BulkExportError,
  type BulkExportOptions,
  bulkExport,
  cancelExport,
  type ExportedDeletion,
  type ExportManifest,
  exportDeletions,
  exportErrors,
  exportedResources,
} from './workflows/bulk/export.js';
export { type Change, type ChangesOptions, changesSince } from './workflows/changes.js';
export {
  type DataRequirement,
  MeasureDataError,
  type MeasureQuery,
  queriesFromRequirements,
} from './workflows/deqm/requirements.js';
export {
  type SubmitMeasureDataOptions,
  type SubmitMeasureDataResult,
  type SubmittedPatient,
  submitMeasureData,
} from './workflows/deqm/submit.js';
export { type ConnectViaDirectoryOptions, connectViaDirectory, x5cOf } from './workflows/network/connect.js';
export {
  DEFAULT_TOKEN_URI_PREFERENCE,
  type DirectoryEntry,
  DirectoryError,
  lookUpOrganization,
  OAUTH_URIS,
  oauthUris,
  pickTokenUri,
} from './workflows/network/directory.js';
export { parseCandidates } from './workflows/scp/candidates.js';
export { findOwnOrganization, loadContext, type OwnOrganization, ScpSyncError } from './workflows/scp/context.js';
export { type Plan, type PlannedObservation, planObservations, type SkipReason } from './workflows/scp/plan.js';
export { type PushFailure, pushObservations } from './workflows/scp/push.js';
export { type ScpSyncOptions, type ScpSyncResult, syncSharedCarePlan } from './workflows/scp/sync.js';
export { type ActiveTarget, activeTargets } from './workflows/scp/targets.js';
export { LOINC_TO_TARGET_TYPE, targetTypeOf } from './workflows/scp/terminology.js';
export {
  type AggregateOptions,
  type AggregateResult,
  aggregatePatient,
  DEFAULT_MAX_BYTES_PER_SOURCE,
  DEFAULT_MAX_RESOURCES_PER_SOURCE,
  DocumentAcceptError,
  DocumentUrlError,
  fetchDocument,
  InvalidBsnError,
  type SourceQueryRecord,
  type SourceResult,
  type SourceState,
} from './workflows/zorgviewer/aggregate.js';
export { type BgzQuery, bgzFromPlanDefinition, DEFAULT_BGZ } from './workflows/zorgviewer/bgz.js';
export { BSN_SYSTEM, INVALID_BSN_WARNING, isValidBsn } from './workflows/zorgviewer/bsn.js';
export {
  type ConnectorOptions,
  type SourceCall,
  SourceConnector,
  type ViewerSigner,
} from './workflows/zorgviewer/connector.js';
export {
  CONSENT_POLICY,
  consentedOrganizations,
  directorySources,
  ENDPOINT_EXT,
  OID_IDENTIFIER_SYSTEM,
  type SourceSystem,
} from './workflows/zorgviewer/directory.js';
export {
  aortaId,
  checkProfessional,
  type Professional,
  plainOid,
  SNOMED,
  signUserContext,
  userContextClaims,
  userContextHeaders,
} from './workflows/zorgviewer/user-context.js';
