import type { OperationOutcome } from 'fhir/r4.js';
import { StoreTimeoutError, StoreUnavailableError } from '../store/errors.ts';

/** FHIR issue-type codes we answer with (http://hl7.org/fhir/issue-type). */
export type IssueCode =
  | 'invalid'
  | 'structure'
  | 'required'
  | 'value'
  | 'code-invalid'
  | 'security'
  | 'login'
  | 'forbidden'
  | 'not-found'
  | 'deleted'
  | 'not-supported'
  | 'conflict'
  | 'too-costly'
  | 'exception'
  | 'processing'
  | 'throttled'
  | 'transient'
  | 'informational';

/** An error that becomes an OperationOutcome with this HTTP status; `diagnostics` is safe to show. */
export class FhirError extends Error {
  constructor(
    readonly status: number,
    readonly code: IssueCode,
    readonly diagnostics: string,
    readonly headers: Record<string, string> = {},
    readonly expression?: string[],
  ) {
    super(diagnostics);
  }
}

export function operationOutcome(
  severity: 'fatal' | 'error' | 'warning' | 'information',
  code: IssueCode,
  diagnostics: string,
  expression?: string[],
): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity, code, diagnostics, ...(expression ? { expression } : {}) }],
  };
}

/** The one answer for a vault that does not exist and a vault the caller may not see (no disclosure). */
export const VAULT_NOT_FOUND = 'Resource not found';
export const vaultNotFound = () => new FhirError(404, 'not-found', VAULT_NOT_FOUND);
export const resourceNotFound = (type: string, id: string) =>
  new FhirError(404, 'not-found', `Resource ${type}/${id} not found`);

/**
 * What the store's own errors mean to a client. The database is not reachable (PostgreSQL restarting, failing
 * over): 503 `transient` with Retry-After, so that clients retry; nothing was written. A search ran past the
 * time the server allows (CAREVAULT_SEARCH_TIMEOUT): 400 `too-costly`, as for other limits a search exceeds —
 * the same search would only cost as much again.
 */
export function storeErrorAsFhir<E>(err: E): E | FhirError {
  if (err instanceof StoreTimeoutError) {
    return new FhirError(
      400,
      'too-costly',
      'the search ran longer than this server allows; narrow it (more selective parameters, fewer sort keys)',
    );
  }
  if (!(err instanceof StoreUnavailableError)) return err;
  return new FhirError(503, 'transient', 'the service is temporarily unavailable; retry later', { 'retry-after': '5' });
}
