/** Base class of every error the SDK throws, so callers can catch SDK failures in one place. */
export class CarevaultError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The authorization server answered with an RFC 6749 error (`invalid_client`, `invalid_scope`, …). */
export class OAuthError extends CarevaultError {
  constructor(
    readonly error: string,
    readonly description: string | undefined,
    readonly status: number,
    options?: { cause?: unknown; retryAfterSeconds?: number | undefined },
  ) {
    super(`${error}${description ? `: ${description}` : ''} (HTTP ${status})`, options);
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }

  /** From a Retry-After header (429/503), when the server sent one. */
  readonly retryAfterSeconds: number | undefined;
}

/** The server could not be reached, or answered with something that is not OAuth (HTML, 5xx, bad JSON). */
export class TransportError extends CarevaultError {
  constructor(
    message: string,
    readonly status?: number,
    options?: { cause?: unknown; retryAfterSeconds?: number | undefined },
  ) {
    super(message, options);
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }

  readonly retryAfterSeconds: number | undefined;
}

/** The SDK was set up wrongly (missing key, bad URL): not worth retrying. */
export class ConfigurationError extends CarevaultError {}
