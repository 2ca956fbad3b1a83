import * as oauth from 'oauth4webapi';
import { limitedFetch, SMALL_RESPONSE_BYTES } from './body-limit.js';
import { ConfigurationError, OAuthError, ResponseTooLargeError, TransportError } from './errors.js';

export type ClientAuthentication =
  /** RFC 8705: the TLS client certificate authenticates; give a `fetch` that presents it (see `mtlsFetch`). */
  | { method: 'tls_client_auth' }
  /** RFC 7523 / SMART Backend Services: an assertion signed with the client's private key. */
  | {
      method: 'private_key_jwt';
      privateKey: CryptoKey;
      kid?: string;
      /** Extra assertion claims, e.g. IUA user context (`subject_name`, `subject_role`, `subject_organization_id`). */
      claims?: Record<string, unknown>;
      /**
       * The certificate chain (base64 DER, leaf first) for the `x5c` header: a member of a trust community is
       * trusted through its network-issued certificate rather than a registered key (seed 003).
       */
      x5c?: string[];
      /** The assertion's `aud`; default the issuer. Networks that publish only a token URI expect that URI. */
      audience?: string;
    }
  | { method: 'client_secret_basic' | 'client_secret_post'; secret: string };

export interface TokenManagerOptions {
  /**
   * Authorization server issuer; its metadata is discovered from /.well-known/oauth-authorization-server.
   * Optional when `tokenEndpoint` is given.
   */
  issuer?: string;
  /** A token endpoint learnt elsewhere (a CapabilityStatement's oauth-uris): no discovery then. */
  tokenEndpoint?: string;
  clientId: string;
  auth: ClientAuthentication;
  /** Space-separated scopes; omitted → the server grants the client's registered scopes. */
  scope?: string;
  /** RFC 8707 resource (the FHIR base the token is for). */
  resource?: string;
  /** Extra token request parameters, e.g. IUA `purpose_of_use`. */
  parameters?: Record<string, string>;
  /** fetch implementation, e.g. one that presents a client certificate. Defaults to globalThis.fetch. */
  fetch?: typeof fetch;
  /** Refresh this many seconds before expiry (capped at half the token lifetime). Default 60. */
  refreshSkewSeconds?: number;
  /** Retries after a network error, 429 or 503 (Retry-After honoured up to 30 s). Default 2. */
  maxRetries?: number;
  /** Clock in milliseconds, for tests. */
  now?: () => number;
}

export interface AccessToken {
  accessToken: string;
  tokenType: string;
  scope: string | undefined;
  /** Epoch milliseconds. */
  expiresAt: number;
  /** Epoch milliseconds after which `getToken` fetches a new token. */
  refreshAt: number;
}

const RETRYABLE = new Set([429, 502, 503, 504]);

/**
 * Client-credentials tokens for an external system (ITI-71 / SMART Backend Services): fetched on first use,
 * renewed before they expire (seed 000), one request at a time however many callers wait (single flight).
 */
export class TokenManager {
  private current: AccessToken | undefined;
  private inFlight: Promise<AccessToken> | undefined;
  private server: oauth.AuthorizationServer | undefined;
  private readonly now: () => number;
  private readonly fetchImpl: typeof fetch;

  constructor(private readonly options: TokenManagerOptions) {
    for (const [name, value] of [
      ['issuer', options.issuer],
      ['tokenEndpoint', options.tokenEndpoint],
    ] as const) {
      if (value === undefined) continue;
      try {
        new URL(value);
      } catch {
        throw new ConfigurationError(`${name} "${value}" is not an absolute URL`);
      }
    }
    if (!options.issuer && !options.tokenEndpoint) throw new ConfigurationError('issuer or tokenEndpoint is required');
    if (!options.clientId) throw new ConfigurationError('clientId is required');
    this.now = options.now ?? Date.now;
    // Discovery and token answers are small: a server sending more is refused, not read into memory.
    this.fetchImpl = limitedFetch(options.fetch ?? globalThis.fetch.bind(globalThis), SMALL_RESPONSE_BYTES);
  }

  /** A valid access token, renewing it first when it is close to expiry. */
  async getToken(): Promise<string> {
    return (await this.getAccessToken()).accessToken;
  }

  async getAccessToken(): Promise<AccessToken> {
    if (this.current && this.now() < this.current.refreshAt) return this.current;
    this.inFlight ??= this.fetchToken().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  /** Forget the cached token, e.g. after a resource server answered 401 invalid_token. */
  invalidate(): void {
    this.current = undefined;
  }

  private async fetchToken(): Promise<AccessToken> {
    const maxRetries = this.options.maxRetries ?? 2;
    for (let attempt = 0; ; attempt++) {
      try {
        const token = await this.requestOnce();
        this.current = token;
        return token;
      } catch (err) {
        const retryAfter = retryDelay(err, attempt);
        if (attempt >= maxRetries || retryAfter === undefined) throw err;
        await new Promise((r) => setTimeout(r, retryAfter));
      }
    }
  }

  private async requestOnce(): Promise<AccessToken> {
    const as = await this.discover();
    const client: oauth.Client = { client_id: this.options.clientId };
    const params = new URLSearchParams(this.options.parameters);
    if (this.options.scope) params.set('scope', this.options.scope);
    if (this.options.resource) params.set('resource', this.options.resource);
    const requestedAt = this.now();
    let response: Response;
    try {
      response = await oauth.clientCredentialsGrantRequest(as, client, this.clientAuth(), params, {
        [oauth.customFetch]: this.fetchImpl,
      });
    } catch (err) {
      throw new TransportError(`token request to ${as.token_endpoint} failed: ${(err as Error).message}`, undefined, {
        cause: err,
      });
    }
    // Read error bodies ourselves: with a 401 the library reports the WWW-Authenticate challenge, not the JSON error.
    const errorBody = response.ok ? undefined : await readJson(response.clone());
    let body: oauth.TokenEndpointResponse;
    try {
      body = await oauth.processClientCredentialsResponse(as, client, response);
    } catch (err) {
      throw toSdkError(err, response, errorBody);
    }
    const lifetime = (body.expires_in ?? 300) * 1000;
    const skew = Math.min((this.options.refreshSkewSeconds ?? 60) * 1000, lifetime / 2);
    return {
      accessToken: body.access_token,
      tokenType: body.token_type,
      scope: body.scope,
      expiresAt: requestedAt + lifetime,
      refreshAt: requestedAt + lifetime - skew,
    };
  }

  private clientAuth(): oauth.ClientAuth {
    const { auth } = this.options;
    switch (auth.method) {
      case 'tls_client_auth':
        return oauth.TlsClientAuth();
      case 'private_key_jwt':
        if (!auth.privateKey) throw new ConfigurationError('private_key_jwt needs privateKey');
        return oauth.PrivateKeyJwt(
          { key: auth.privateKey, ...(auth.kid ? { kid: auth.kid } : {}) },
          {
            [oauth.modifyAssertion]: (header, payload) => {
              addClaims(payload, auth.claims ?? {});
              if (auth.x5c) (header as Record<string, unknown>).x5c = auth.x5c;
              if (auth.audience) payload.aud = auth.audience;
            },
          },
        );
      case 'client_secret_basic':
        return oauth.ClientSecretBasic(auth.secret);
      case 'client_secret_post':
        return oauth.ClientSecretPost(auth.secret);
      default:
        throw new ConfigurationError(`unsupported client authentication ${(auth as { method: string }).method}`);
    }
  }

  private async discover(): Promise<oauth.AuthorizationServer> {
    if (this.server) return this.server;
    const { tokenEndpoint } = this.options;
    if (tokenEndpoint) {
      this.server = { issuer: this.options.issuer ?? new URL(tokenEndpoint).origin, token_endpoint: tokenEndpoint };
      return this.server;
    }
    const issuer = new URL(this.options.issuer as string);
    let response: Response;
    try {
      response = await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', [oauth.customFetch]: this.fetchImpl });
    } catch (err) {
      throw new TransportError(`discovery at ${issuer.href} failed: ${(err as Error).message}`, undefined, {
        cause: err,
      });
    }
    try {
      this.server = await oauth.processDiscoveryResponse(issuer, response);
    } catch (err) {
      throw toSdkError(err, response);
    }
    return this.server;
  }
}

/** The registered claims (RFC 7523 §3) stay the library's: extra claims may add, never replace them. */
const REGISTERED = new Set(['iss', 'sub', 'aud', 'jti', 'exp', 'iat', 'nbf']);
function addClaims(payload: Record<string, unknown>, claims: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(claims)) {
    if (REGISTERED.has(k)) throw new ConfigurationError(`assertion claim "${k}" is set by the token manager`);
    payload[k] = v;
  }
}

async function readJson(response: Response): Promise<Record<string, unknown> | undefined> {
  try {
    const body = (await response.json()) as unknown;
    return typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function toSdkError(err: unknown, response: Response, body?: Record<string, unknown>): Error {
  // oauth4webapi wraps what reading the body threw.
  for (let e = err; e instanceof Error; e = e.cause) if (e instanceof ResponseTooLargeError) return e;
  const retryAfterSeconds = parseRetryAfter(response.headers.get('retry-after'));
  if (err instanceof oauth.ResponseBodyError) {
    return new OAuthError(err.error, err.error_description, err.status, { cause: err, retryAfterSeconds });
  }
  if (typeof body?.error === 'string') {
    const description = typeof body.error_description === 'string' ? body.error_description : undefined;
    return new OAuthError(body.error, description, response.status, { cause: err, retryAfterSeconds });
  }
  return new TransportError(`unexpected response (HTTP ${response.status}) from ${response.url}`, response.status, {
    cause: err,
    retryAfterSeconds,
  });
}

/** Milliseconds to wait before retrying, or undefined when the failure is not transient. */
function retryDelay(err: unknown, attempt: number): number | undefined {
  if (!(err instanceof TransportError || err instanceof OAuthError)) return undefined;
  const networkFailure = err instanceof TransportError && err.status === undefined;
  if (!networkFailure && !RETRYABLE.has(err.status as number)) return undefined;
  if (err.retryAfterSeconds !== undefined) return Math.min(err.retryAfterSeconds * 1000, 30_000);
  return 200 * 2 ** attempt;
}

/** RFC 9110 §10.2.3: delay-seconds or an HTTP date. */
export function parseRetryAfter(header: string | null): number | undefined {
  if (!header) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim());
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}
