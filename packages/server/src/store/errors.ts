/** The database (or another backing service) cannot be reached now; the request may be retried later. */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
}
