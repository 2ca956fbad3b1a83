/** The database (or another backing service) cannot be reached now; the request may be retried later. */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
}

/**
 * A read ran longer than the time a search may take (CAREVAULT_SEARCH_TIMEOUT) and was given up: what was asked
 * costs too much, not a passing fault.
 */
export class StoreTimeoutError extends Error {
  override readonly name = 'StoreTimeoutError';
}
