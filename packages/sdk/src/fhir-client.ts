import { DEFAULT_MAX_RESPONSE_BYTES, limitBody } from './body-limit.js';
import { bodyChunks, type IdleTimer } from './body-stream.js';
import { CarevaultError, ConfigurationError, FhirResponseError, TransportError } from './errors.js';
import { isInvalidToken, parseBody, readOutcome } from './fhir-answer.js';
import type {
  Bundle,
  BundleEntry,
  JsonPatchOperation,
  OperationOutcome,
  Resource,
  SearchParams,
} from './fhir-types.js';
import { newId } from './ids.js';
import { backoffMs, DEFAULT_RETRY, RETRYABLE_STATUS, type RetryPolicy, sleep } from './retry.js';
import { isSafeToRepeat } from './safe-to-repeat.js';
import { query } from './search-query.js';
import { parseRetryAfter } from './token-manager.js';

/** What the client needs from a token source: `TokenManager` fits, so does any `{ getToken }` object. */
export interface TokenSource {
  getToken(): Promise<string>;
  /** Drops the cached token so the next `getToken` fetches a new one (after a 401 `invalid_token`). */
  invalidate?(): void;
}

export interface FhirRequestInfo {
  method: string;
  url: string;
  requestId: string;
  attempt: number;
}

export interface FhirClientOptions {
  /** The FHIR base, e.g. https://host/fhir/alice_1234 (no trailing slash needed). */
  baseUrl: string;
  /** Bearer tokens; omitted for open servers. */
  tokens?: TokenSource;
  /** fetch implementation (e.g. `tlsFetch` for mTLS). Defaults to globalThis.fetch. */
  fetch?: typeof fetch;
  /** Retry policy for requests that are safe to repeat. */
  retry?: Partial<RetryPolicy>;
  /** Per-attempt timeout. Default 30 s. */
  timeoutMs?: number;
  /**
   * The largest answer accepted, in bytes (default 256 MiB): past it the request fails with
   * `ResponseTooLargeError`, not retried. `stream()` (Bulk Data files) is not limited.
   */
  maxResponseBytes?: number;
  /** X-Correlation-Id for every request of this client (one per session); generated when omitted. */
  correlationId?: string;
  /** Extra headers per request (user context, `X-ZV-*`, `AORTA-ID`…), called once per attempt. */
  headers?: (info: FhirRequestInfo) => Record<string, string> | Promise<Record<string, string>>;
  /** Called before each retry, e.g. for logging. */
  onRetry?: (info: FhirRequestInfo & { reason: string; delayMs: number }) => void;
}

export interface RequestOptions {
  signal?: AbortSignal;
  headers?: Record<string, string>;
  /** Overrides the idempotency guess (see `isSafeToRepeat`). */
  retry?: boolean;
}

export interface FhirResponse<T> {
  status: number;
  headers: Headers;
  body: T;
}

const FHIR_JSON = 'application/fhir+json';

/**
 * A FHIR R4 REST client for any server: explicit `Accept` on every request (some EHRs refuse requests
 * without it), Bearer tokens renewed once on `401 invalid_token`, correlation ids, and retries with backoff
 * and jitter on network errors, 502/503/504 and 429 (honouring Retry-After) — only for requests that are
 * safe to repeat.
 */
export class FhirClient {
  readonly baseUrl: string;
  readonly correlationId: string;
  private readonly base: URL;
  private readonly fetchImpl: typeof fetch;
  private readonly policy: RetryPolicy;
  private readonly timeoutMs: number;
  private readonly maxResponseBytes: number;

  constructor(private readonly options: FhirClientOptions) {
    let base: URL;
    try {
      base = new URL(options.baseUrl);
    } catch {
      throw new ConfigurationError(`FHIR base "${options.baseUrl}" is not an absolute URL`);
    }
    this.base = base;
    this.baseUrl = base.href.replace(/\/$/, '');
    this.correlationId = options.correlationId ?? newId();
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.policy = { ...DEFAULT_RETRY, ...options.retry };
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  }

  read<T extends Resource = Resource>(type: string, id: string, o?: RequestOptions): Promise<T> {
    return this.body('GET', `${type}/${encodeURIComponent(id)}`, undefined, o);
  }

  vread<T extends Resource = Resource>(type: string, id: string, version: string, o?: RequestOptions): Promise<T> {
    return this.body('GET', `${type}/${encodeURIComponent(id)}/_history/${encodeURIComponent(version)}`, undefined, o);
  }

  /**
   * The current version of a resource held (R4 conditional read): asked with `If-None-Match` for its
   * `meta.versionId`, a 304 gives `held` back and no body travels; a newer version is read whole. One deleted
   * or gone is the server's 410/404 `FhirResponseError`, as for a read.
   */
  async refresh<T extends Resource>(held: T, o?: RequestOptions): Promise<T> {
    if (!held.id) throw new ConfigurationError('refresh needs resource.id');
    const version = held.meta?.versionId;
    const headers = { ...o?.headers, ...(version ? { 'if-none-match': `W/"${version}"` } : {}) };
    try {
      return await this.read<T>(held.resourceType, held.id, { ...o, headers });
    } catch (err) {
      if (version && err instanceof FhirResponseError && err.status === 304) return held;
      throw err;
    }
  }

  /** One page of a search (`type` omitted: a system search). */
  search<T extends Resource = Resource>(type: string | undefined, params?: SearchParams, o?: RequestOptions) {
    return this.body<Bundle<T>>('GET', `${type ?? ''}${query(params)}`, undefined, o);
  }

  /** Every page of a search, following `next` links; each page is one Bundle. */
  async *pages<T extends Resource = Resource>(type: string | undefined, params?: SearchParams, o?: RequestOptions) {
    let page = await this.search<T>(type, params, o);
    for (let n = 0; n < 10_000; n++) {
      yield page;
      const next = page.link?.find((l) => l.relation === 'next')?.url;
      if (!next) return;
      page = await this.body<Bundle<T>>('GET', this.onOwnOrigin(next), undefined, o);
    }
  }

  /** Patient `$everything` page by page, like `pages()`: the record as matches, what it refers to as includes. */
  everything<T extends Resource = Resource>(patientId: string, params?: SearchParams, o?: RequestOptions) {
    return this.pages<T>(`Patient/${encodeURIComponent(patientId)}/$everything`, params, o);
  }

  /** Every matching resource (`search.mode` match) over all pages. */
  async *searchAll<T extends Resource = Resource>(type: string, params?: SearchParams, o?: RequestOptions) {
    for await (const page of this.pages<T>(type, params, o)) {
      for (const e of page.entry ?? []) if (e.resource && e.search?.mode !== 'include') yield e.resource;
    }
  }

  create<T extends Resource>(resource: T, o?: RequestOptions & { ifNoneExist?: string }): Promise<T & Resource> {
    const headers = { ...o?.headers, ...(o?.ifNoneExist ? { 'if-none-exist': o.ifNoneExist } : {}) };
    return this.body('POST', resource.resourceType, resource, { ...o, headers });
  }

  /** PUT by id (update, or create with a client id). */
  update<T extends Resource>(resource: T, o?: RequestOptions & { ifMatch?: string }): Promise<T & Resource> {
    if (!resource.id) throw new ConfigurationError('update needs resource.id');
    const headers = { ...o?.headers, ...(o?.ifMatch ? { 'if-match': o.ifMatch } : {}) };
    return this.body('PUT', `${resource.resourceType}/${encodeURIComponent(resource.id)}`, resource, { ...o, headers });
  }

  conditionalUpdate<T extends Resource>(resource: T, params: SearchParams, o?: RequestOptions): Promise<T & Resource> {
    return this.body('PUT', `${resource.resourceType}${query(params)}`, resource, o);
  }

  /** PATCH by id: a JSON Patch (operations), or a FHIRPath Patch (a Parameters resource, sent as FHIR JSON). */
  patch<T extends Resource = Resource>(
    type: string,
    id: string,
    patch: JsonPatchOperation[] | (Resource & { resourceType: 'Parameters' }),
    o?: RequestOptions,
  ) {
    const contentType = Array.isArray(patch) ? 'application/json-patch+json' : FHIR_JSON;
    return this.body<T>('PATCH', `${type}/${encodeURIComponent(id)}`, patch, {
      ...o,
      headers: { 'content-type': contentType, ...o?.headers },
    });
  }

  async delete(type: string, id: string, o?: RequestOptions): Promise<void> {
    await this.request('DELETE', `${type}/${encodeURIComponent(id)}`, undefined, o);
  }

  history(type?: string, id?: string, params?: SearchParams, o?: RequestOptions): Promise<Bundle> {
    const path = [type, id && encodeURIComponent(id), '_history'].filter(Boolean).join('/');
    return this.body('GET', `${path}${query(params)}`, undefined, o);
  }

  /** A batch or transaction Bundle, posted to the base; the response Bundle. */
  bundle(bundle: Bundle, o?: RequestOptions): Promise<Bundle> {
    return this.body('POST', '', bundle, o);
  }

  batch(entries: BundleEntry[], o?: RequestOptions): Promise<Bundle> {
    return this.bundle({ resourceType: 'Bundle', type: 'batch', entry: entries }, o);
  }

  transaction(entries: BundleEntry[], o?: RequestOptions): Promise<Bundle> {
    return this.bundle({ resourceType: 'Bundle', type: 'transaction', entry: entries }, o);
  }

  /** `$name` at the system, type or instance level; GET when there is no body. */
  operation<T = Resource>(
    name: string,
    at: { type?: string; id?: string; params?: SearchParams; body?: Resource; method?: 'GET' | 'POST' } = {},
    o?: RequestOptions,
  ): Promise<T> {
    const path = [at.type, at.id && encodeURIComponent(at.id), `$${name.replace(/^\$/, '')}`].filter(Boolean).join('/');
    return this.body<T>(at.method ?? (at.body ? 'POST' : 'GET'), `${path}${query(at.params)}`, at.body, o);
  }

  /** `$validate` (as a create or an update of its own id; against a profile): its OperationOutcome, an error per problem. */
  validate(resource: Resource, o?: RequestOptions & { mode?: 'create' | 'update'; profile?: string }) {
    if (o?.mode === 'update' && !resource.id) throw new ConfigurationError('validating an update needs resource.id');
    const at = { type: resource.resourceType, id: o?.mode === 'update' ? resource.id : undefined, body: resource };
    const params = { ...(o?.mode ? { mode: o.mode } : {}), ...(o?.profile ? { profile: o.profile } : {}) };
    return this.operation<OperationOutcome>('validate', { ...at, params }, o);
  }

  /** The response body parsed as JSON (undefined for an empty body). */
  async body<T>(method: string, path: string, body?: unknown, o?: RequestOptions): Promise<T> {
    return (await this.request<T>(method, path, body, o)).body;
  }

  /**
   * Any request relative to the base (or an absolute URL on the base's origin). Throws `FhirResponseError`
   * for error statuses, `TransportError` when the server could not be reached in the retry budget.
   */
  request<T>(method: string, path: string, body?: unknown, o: RequestOptions = {}): Promise<FhirResponse<T>> {
    return this.exchange(method, path, body, o, async (res) => (await parseBody(res)) as T);
  }

  /**
   * A resource in its native format, e.g. a `Binary` as the PDF it holds (FHIR R4 Binary read with an explicit
   * non-FHIR `Accept`, as seed 001's document step asks). Same tokens, retries and headers as every request.
   */
  async binary(path: string, accept: string, o: RequestOptions = {}): Promise<FhirResponse<Uint8Array>> {
    const headers = { ...o.headers, accept };
    return this.exchange(
      'GET',
      path,
      undefined,
      { ...o, headers },
      async (res) => new Uint8Array(await res.arrayBuffer()),
    );
  }

  /** A Binary from its bytes in their own media type (a PDF as application/pdf): POST, or PUT under `id`. */
  uploadBinary(data: Uint8Array, contentType: string, o?: RequestOptions & { id?: string }): Promise<Resource> {
    const headers = { ...o?.headers, 'content-type': contentType };
    const path = o?.id ? `Binary/${encodeURIComponent(o.id)}` : 'Binary';
    return this.body(o?.id ? 'PUT' : 'POST', path, data, { ...o, headers });
  }

  /**
   * A large body as it arrives (a Bulk Data file): the request is retried like any read until the server
   * answers; then the body streams, and the per-attempt timeout bounds each wait for data instead of the whole
   * download. A connection lost mid-body ends the iteration with a `TransportError`.
   */
  async stream(path: string, accept: string, o: RequestOptions = {}): Promise<FhirResponse<AsyncIterable<Uint8Array>>> {
    const headers = { ...o.headers, accept };
    return this.exchange('GET', path, undefined, { ...o, headers }, async (res, idle) => bodyChunks(res, path, idle), {
      streamed: true,
    });
  }

  private async exchange<T>(
    method: string,
    path: string,
    body: unknown,
    o: RequestOptions,
    read: (res: Response, idle?: IdleTimer) => Promise<T>,
    mode: { streamed?: boolean } = {},
  ): Promise<FhirResponse<T>> {
    const url = /^https?:\/\//.test(path) ? this.onOwnOrigin(path) : `${this.baseUrl}/${path.replace(/^\//, '')}`;
    const repeatable = o.retry ?? isSafeToRepeat(method, body, o.headers);
    const requestId = newId();
    const started = Date.now();
    let renewedToken = false;
    for (let attempt = 0; ; attempt++) {
      const info: FhirRequestInfo = { method, url, requestId, attempt };
      let failure: { reason: string; retryAfter?: number | undefined; error: CarevaultError };
      try {
        const { res, idle } = await this.attempt(info, body, o, mode.streamed);
        if (res.ok) return { status: res.status, headers: res.headers, body: await read(res, idle) };
        // A streamed request's error body is read under its timeout too.
        idle?.arm();
        const outcome = await readOutcome(res).finally(() => idle?.stop());
        const retryAfter = parseRetryAfter(res.headers.get('retry-after'));
        const error = new FhirResponseError(res.status, method, url, outcome, { retryAfterSeconds: retryAfter });
        if (res.status === 401 && !renewedToken && this.options.tokens?.invalidate && isInvalidToken(res)) {
          // The token was rotated or revoked under us: renew once and repeat (nothing was done with a 401).
          renewedToken = true;
          this.options.tokens.invalidate();
          attempt--;
          continue;
        }
        if (!RETRYABLE_STATUS.has(res.status)) throw error;
        failure = { reason: `HTTP ${res.status}`, retryAfter, error };
      } catch (err) {
        if (err instanceof FhirResponseError || err instanceof ConfigurationError) throw err;
        if (o.signal?.aborted) throw err;
        if (err instanceof CarevaultError && !(err instanceof TransportError)) throw err;
        // fetch rejects what it cannot send (a line break in a header value) with a TypeError of its own, where a
        // network failure is `fetch failed` with a cause: the former would fail the same way every time.
        if (err instanceof TypeError && err.cause === undefined && err.message !== 'fetch failed') {
          throw new ConfigurationError(`${method} ${url} cannot be sent: ${err.message}`, { cause: err });
        }
        const cause = (err as { cause?: { code?: string } }).cause;
        const reason = (err as Error).name === 'TimeoutError' ? 'timeout' : (cause?.code ?? (err as Error).message);
        failure = {
          reason,
          error:
            err instanceof TransportError
              ? err
              : new TransportError(`${method} ${url} failed: ${reason}`, undefined, { cause: err }),
        };
      }
      const delay = backoffMs(this.policy, attempt, failure.retryAfter);
      const last =
        !repeatable ||
        attempt + 1 >= this.policy.maxAttempts ||
        Date.now() - started + delay > this.policy.maxElapsedMs;
      if (last) throw failure.error;
      this.options.onRetry?.({ ...info, reason: failure.reason, delayMs: delay });
      await sleep(delay, o.signal);
    }
  }

  private async attempt(
    info: FhirRequestInfo,
    body: unknown,
    o: RequestOptions,
    streamed = false,
  ): Promise<{ res: Response; idle?: IdleTimer }> {
    const headers: Record<string, string> = {
      accept: FHIR_JSON,
      'x-request-id': info.requestId,
      'x-correlation-id': this.correlationId,
      ...(body !== undefined ? { 'content-type': FHIR_JSON } : {}),
      ...(await this.options.headers?.(info)),
      ...o.headers,
    };
    if (this.options.tokens) headers.authorization = `Bearer ${await this.options.tokens.getToken()}`;
    const idle = streamed ? this.idleTimer() : undefined;
    const timeout = idle?.signal ?? AbortSignal.timeout(this.timeoutMs);
    const signal = o.signal ? AbortSignal.any([o.signal, timeout]) : timeout;
    idle?.arm();
    try {
      const res = await this.fetchImpl(info.url, {
        method: info.method,
        headers,
        signal,
        // Bytes (uploadBinary) as they are; a Buffer's memory is an ArrayBuffer, which fetch's types ask for.
        ...(body !== undefined
          ? { body: body instanceof Uint8Array ? (body as Uint8Array<ArrayBuffer>) : JSON.stringify(body) }
          : {}),
      });
      return idle ? { res, idle } : { res: limitBody(res, this.maxResponseBytes) };
    } finally {
      idle?.stop();
    }
  }

  /** The per-attempt timeout of a streamed body: it runs only while data is awaited. */
  private idleTimer(): IdleTimer & { signal: AbortSignal } {
    const aborter = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    return {
      signal: aborter.signal,
      arm: () => {
        clearTimeout(timer);
        timer = setTimeout(
          () => aborter.abort(new DOMException(`no data for ${this.timeoutMs} ms`, 'TimeoutError')),
          this.timeoutMs,
        );
      },
      stop: () => clearTimeout(timer),
    };
  }

  /**
   * Servers behind proxies hand out `next` links on an internal host name. The token must never travel to
   * another origin, so such a link is followed on the configured base's origin, path and query kept.
   */
  private onOwnOrigin(link: string): string {
    const u = new URL(link, `${this.baseUrl}/`);
    if (u.origin === this.base.origin) return u.href;
    return `${this.base.origin}${u.pathname}${u.search}`;
  }
}
