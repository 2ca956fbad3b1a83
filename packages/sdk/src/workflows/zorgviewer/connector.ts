import { type ByteBudget, limitBody, limitedFetch, SMALL_RESPONSE_BYTES } from '../../body-limit.js';
import { FhirClient, type TokenSource } from '../../fhir-client.js';
import { TokenManager } from '../../token-manager.js';
import type { SourceSystem } from './directory.js';
import { type Professional, signUserContext, userContextClaims, userContextHeaders } from './user-context.js';

export interface ViewerSigner {
  /** The viewer's private signing key (the key its JWKS publishes). */
  key: CryptoKey;
  kid: string;
  alg?: string;
}

export interface ConnectorOptions {
  signer: ViewerSigner;
  /** fetch for a source (e.g. one trusting the source's CA); defaults to globalThis.fetch. */
  fetchFor?: (source: SourceSystem) => typeof fetch;
  /** Tokens kept per source and professional (oldest dropped first). Default 1000. */
  maxTokenManagers?: number;
  /** The largest answer taken from a source (a search page, a document), in bytes. Default 64 MiB. */
  maxResponseBytes?: number;
}

/** The requests made of one source for one query, for the viewer's audit trail. */
export interface SourceCall {
  client: FhirClient;
  requestIds: string[];
}

/**
 * Opens source systems for the aggregator: per source and professional a SMART Backend Services token whose
 * client assertion carries the IUA user context, and on every request the correlation and `X-ZV-*` headers
 * with a signed `X-ZV-Context`. Token managers are cached, so a token is reused until it nears expiry.
 */
export class SourceConnector {
  private readonly issuers = new Map<string, Promise<string>>();
  private readonly tokens = new Map<string, TokenSource>();

  constructor(private readonly options: ConnectorOptions) {}

  /** `budget`: what all of this call's answers may hold together (its tokens are not counted). */
  open(
    source: SourceSystem,
    professional: Professional,
    correlationId: string,
    timeoutMs: number,
    budget?: ByteBudget,
  ): SourceCall {
    const fetchImpl = this.options.fetchFor?.(source) ?? globalThis.fetch.bind(globalThis);
    const requestIds: string[] = [];
    let context: Promise<string> | undefined;
    // The token manager outlives this call: it must not draw on the call's budget.
    const tokens = this.tokenSource(source, professional, fetchImpl);
    const client = new FhirClient({
      baseUrl: source.fhirBase,
      fetch: budget ? limitedFetch(fetchImpl, budget) : fetchImpl,
      tokens,
      correlationId,
      timeoutMs,
      maxResponseBytes: this.options.maxResponseBytes ?? 64 * 1024 * 1024,
      // One quick retry at most: the per-source timeout bounds the whole query anyway.
      retry: { maxAttempts: 2, maxElapsedMs: timeoutMs },
      headers: async (info) => {
        if (info.attempt === 0) requestIds.push(info.requestId);
        context ??= signUserContext(professional, { ...this.options.signer, clientId: source.clientId });
        return userContextHeaders(
          professional,
          await context,
          { requestId: info.requestId, correlationId },
          source.style,
        );
      },
    });
    return { client, requestIds };
  }

  private tokenSource(source: SourceSystem, p: Professional, fetchImpl: typeof fetch): TokenSource {
    const key = JSON.stringify([source.fhirBase, source.clientId, p.id, p.role, p.organizationOid, p.name ?? '']);
    let manager = this.tokens.get(key);
    if (!manager) {
      const max = this.options.maxTokenManagers ?? 1000;
      if (this.tokens.size >= max) this.tokens.delete(this.tokens.keys().next().value as string);
      const issuer = this.issuerOf(source, fetchImpl);
      const { signer } = this.options;
      let inner: TokenManager | undefined;
      const lazy = async () => {
        inner ??= new TokenManager({
          issuer: await issuer,
          clientId: source.clientId,
          fetch: fetchImpl,
          maxRetries: 0,
          auth: { method: 'private_key_jwt', privateKey: signer.key, kid: signer.kid, claims: userContextClaims(p) },
        });
        return inner;
      };
      manager = { getToken: async () => (await lazy()).getToken(), invalidate: () => inner?.invalidate() };
      this.tokens.set(key, manager);
    }
    return manager;
  }

  /** The source's authorization server, from its SMART configuration (cached; forgotten when the lookup fails). */
  private issuerOf(source: SourceSystem, fetchImpl: typeof fetch): Promise<string> {
    let found = this.issuers.get(source.fhirBase);
    if (!found) {
      found = (async () => {
        const url = `${source.fhirBase.replace(/\/$/, '')}/.well-known/smart-configuration`;
        const res = await fetchImpl(url, {
          headers: { accept: 'application/json' },
          signal: AbortSignal.timeout(10_000),
        });
        if (!res.ok) throw new Error(`${url} answered ${res.status}`);
        const config = (await limitBody(res, SMALL_RESPONSE_BYTES).json()) as {
          issuer?: unknown;
          token_endpoint?: unknown;
        };
        if (typeof config.issuer === 'string') return config.issuer;
        if (typeof config.token_endpoint === 'string') return new URL(config.token_endpoint).origin;
        throw new Error(`${url} names no issuer`);
      })();
      found.catch(() => this.issuers.delete(source.fhirBase));
      this.issuers.set(source.fhirBase, found);
    }
    return found;
  }
}
