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

export interface OutcomeIssue {
  severity?: string;
  code?: string;
  diagnostics?: string;
  expression?: string[];
}

/** A FHIR server answered with an error status; its OperationOutcome (when it sent one) is kept whole. */
export class FhirResponseError extends CarevaultError {
  constructor(
    readonly status: number,
    readonly method: string,
    readonly url: string,
    readonly outcome: { resourceType: 'OperationOutcome'; issue?: OutcomeIssue[] } | undefined,
    options?: { cause?: unknown; retryAfterSeconds?: number | undefined },
  ) {
    const first = outcome?.issue?.[0];
    super(
      `${method} ${url} → HTTP ${status}${first ? `: ${first.code ?? ''}${first.diagnostics ? ` ${first.diagnostics}` : ''}` : ''}`,
      options,
    );
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }

  readonly retryAfterSeconds: number | undefined;

  get issues(): OutcomeIssue[] {
    return this.outcome?.issue ?? [];
  }

  /** Issue codes (`not-found`, `forbidden`, `throttled`, …). */
  get codes(): string[] {
    return this.issues.map((i) => i.code ?? '').filter(Boolean);
  }
}

/**
 * A server's answer was larger than this client accepts (`maxResponseBytes`): refused by its Content-Length or
 * once that many bytes arrived, and not retried, since the same request would bring the same answer.
 */
export class ResponseTooLargeError extends CarevaultError {
  constructor(
    readonly url: string,
    readonly maxBytes: number,
  ) {
    super(`${url} answered with more than the ${maxBytes} bytes this client accepts`);
  }
}
