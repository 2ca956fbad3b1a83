import { decodeJwt, decodeProtectedHeader } from 'jose';
import Provider, { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { Store } from '../../store/types.ts';
import type { ClientRegistry } from '../clients.ts';
import type { CertificateSource } from '../mtls.ts';
import { isCovered, splitScope } from '../smart-scopes.ts';
import { TrustError } from './chain.ts';
import type { TrustCommunities } from './communities.ts';
import { hasX5c, verifyNetworkJwt } from './network-assertion.ts';
import { saveNetworkClient } from './network-record.ts';

/**
 * `invalid_client` that says which rule failed. A registered client only learns "client authentication failed";
 * a network member holds no secret that a precise answer could help guess, and needs to know what to fix.
 */
export function networkRefusal(message: string): Error {
  const err = new errors.InvalidClientAuth(message);
  (err as unknown as { error_description: string }).error_description = message;
  return err;
}

/**
 * Clients of trust communities as the engine sees them. The engine looks a client up by the assertion's `sub`
 * before it verifies anything; for an assertion with an `x5c` chain this lookup validates the chain and the
 * assertion and answers with the leaf certificate's key, so that the engine's own verification follows.
 */
export class NetworkClients {
  private readonly answered = new WeakMap<object, Promise<Record<string, unknown> | undefined>>();

  constructor(
    private readonly deps: {
      store: Store;
      clients: ClientRegistry;
      communities: TrustCommunities;
      issuer: string;
      certificates: CertificateSource;
    },
  ) {}

  /**
   * Engine metadata for `id` when the current request authenticates it with an `x5c` assertion; null when the
   * request is not such a one (the registry answers as for any client).
   */
  async metadata(id: string): Promise<Record<string, unknown> | undefined | null> {
    // The engine's own request context (an AsyncLocalStorage of oidc-provider): a second one of ours cost every
    // promise of a token request another store to carry on Node 20.
    const ctx = Provider.ctx;
    const assertion = (ctx?.oidc?.params as { client_assertion?: unknown } | undefined)?.client_assertion;
    if (!ctx || !hasX5c(assertion) || decodeJwt(assertion).sub !== id) return null;
    const known = await this.deps.clients.stored(id);
    if (known && known.carevault.community === undefined) return null;
    if (known?.disabled) return undefined;
    let answer = this.answered.get(ctx);
    if (!answer) {
      answer = this.authenticate(ctx, assertion, known?.carevault);
      this.answered.set(ctx, answer);
    }
    return answer;
  }

  private async authenticate(
    ctx: KoaContextWithOIDC,
    assertion: string,
    policy: { scopes: string[]; registered?: boolean | undefined; community?: string | undefined } | undefined,
  ): Promise<Record<string, unknown>> {
    const { issuer } = this.deps;
    try {
      const verified = await verifyNetworkJwt(assertion, {
        anchors: await this.deps.communities.anchors(),
        audiences: [`${issuer}/oauth/token`, issuer, `${issuer}${ctx.path}`],
        store: this.deps.store,
        kind: 'client assertion',
        recordedCommunity: async () => policy?.community,
      });
      const community = await this.deps.communities.get(verified.community);
      if (!community) throw new TrustError(`community "${verified.community}" was just removed`);
      const allowed = splitScope(community.scope);
      // A client that registered (UDAP) keeps the scopes it registered for, as far as the community still allows.
      const scopes = policy?.registered ? policy.scopes.filter((s) => isCovered(s, allowed)) : allowed;
      const oidc = await saveNetworkClient(this.deps.clients, {
        clientId: verified.clientId,
        community: verified.community,
        leaf: verified.leaf,
        scopes,
        registered: policy?.registered,
      });
      const presented = this.deps.certificates.certificate({ socket: ctx.req.socket, headers: ctx.req.headers });
      const kid = decodeProtectedHeader(assertion).kid;
      const [key] = (oidc.jwks as { keys: Record<string, unknown>[] }).keys;
      return {
        ...oidc,
        // The engine selects the key by the assertion's kid, whatever name the member gave its key.
        jwks: { keys: [{ ...key, ...(typeof kid === 'string' ? { kid } : {}) }] },
        // RFC 8705: a token asked for over TLS with the same certificate is bound to it.
        ...(presented?.fingerprint256 === verified.leaf.fingerprint256
          ? { tls_client_certificate_bound_access_tokens: true }
          : {}),
      };
    } catch (err) {
      if (err instanceof TrustError) throw networkRefusal(err.message);
      throw err;
    }
  }
}
