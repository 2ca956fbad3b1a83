/** The database (or another backing service) cannot be reached now; the request may be retried later. */
export class StoreUnavailableError extends Error {
  override readonly name: string = 'StoreUnavailableError';
}

/**
 * Every SQLite search thread stayed taken (by costly searches) for longer than a search may run: this request
 * may be retried later, but the database is there, and the requests beside it are answered.
 */
export class StoreBusyError extends StoreUnavailableError {
  override readonly name = 'StoreBusyError';
}

/**
 * A read ran longer than the time a search may take (CAREVAULT_SEARCH_TIMEOUT) and was given up: what was asked
 * costs too much, not a passing fault.
 */
export class StoreTimeoutError extends Error {
  override readonly name = 'StoreTimeoutError';
}
