import type { IncomingMessage, ServerResponse } from 'node:http';
import { createLocalJWKSet, type JWTVerifyGetKey } from 'jose';
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';
import { EVENT } from '../audit/balp.ts';
import { introspectionEvent, tokenEvent } from '../audit/oauth-events.ts';
import type { AuditTrail } from '../audit/trail.ts';
import { correlationOf } from '../http/correlation.ts';
import { clientAddressOf } from '../http/trusted-proxies.ts';
import { ClientKeys } from './client-keys.ts';
import type { ClientRegistry } from './clients.ts';
import { introspectJwt } from './introspection.ts';
import { extendDiscovery } from './metadata.ts';
import { createProvider, type ProviderDeps } from './provider.ts';
import { revokeJwt } from './revocation.ts';
import { addLaunchContext } from './token-response.ts';
import { TrustCommunities } from './trust/communities.ts';
import { NetworkClients } from './trust/network-clients.ts';
import { type RegistrationAnswer, registerNetworkClient } from './trust/udap-registration.ts';
import { type AccessTokenClaims, TokenVerifier } from './verifier.ts';

export interface AuthOptions extends ProviderDeps {
  log: Logger;
  audit: AuditTrail;
}

interface ClientAuthError extends Error {
  error?: string;
  error_detail?: string;
  cause?: Error;
}

/** The client id a failed request named (form, Basic header or assertion), for the log only. */
function clientIdOf(ctx: KoaContextWithOIDC): string | undefined {
  const fromEngine = ctx.oidc?.client?.clientId ?? (ctx.oidc?.params as { client_id?: unknown } | undefined)?.client_id;
  if (typeof fromEngine === 'string') return fromEngine.slice(0, 128);
  const basic = /^Basic\s+(\S+)/i.exec(ctx.get('authorization'))?.[1];
  if (!basic) return undefined;
  const user = Buffer.from(basic, 'base64').toString('utf8').split(':')[0] ?? '';
  try {
    return decodeURIComponent(user).slice(0, 128);
  } catch {
    return user.slice(0, 128);
  }
}

/**
 * The authorization server: the oidc-provider engine plus carevault's SMART/IUA layer, and the
 * verifier resource servers use. The engine is rebuilt when the signing keys change so a rotated key is
 * published without a restart.
 */
export class AuthServer {
  readonly verifier: TokenVerifier;
  /** Keys clients registered, for what they sign outside the token endpoint (X-ZV-Context). */
  readonly clientKeys: ClientKeys;
  /** Network CAs whose certificate holders authenticate without registering (seed 003). */
  readonly communities: TrustCommunities;
  private readonly network: NetworkClients;
  private provider: Provider;
  private handler: (req: IncomingMessage, res: ServerResponse) => void;
  private readonly issuerHost: string;
  private jwks: JWTVerifyGetKey;
  private keyFingerprint: string;

  constructor(private readonly options: AuthOptions) {
    this.jwks = createLocalJWKSet({ keys: options.keys.publicJwks() });
    this.keyFingerprint = options.keys.fingerprint();
    this.verifier = new TokenVerifier({
      issuer: options.issuer,
      keys: () => this.jwks,
      isRevoked: (jti) => options.store.revocations.isRevoked(jti),
      opaque: (token) => this.findOpaque(token),
    });
    this.clientKeys = new ClientKeys(options.clients, options.outboundCa);
    this.communities = new TrustCommunities(options.store);
    this.network = new NetworkClients({ ...options, communities: this.communities });
    this.provider = this.build();
    this.handler = this.provider.callback();
    this.issuerHost = new URL(options.issuer).host;
  }

  get clients(): ClientRegistry {
    return this.options.clients;
  }

  get engine(): Provider {
    return this.provider;
  }

  /**
   * Node request handler for /oauth/* and the discovery documents. The engine derives its own URLs from the
   * request — the audiences it accepts in a client assertion, a DPoP proof's `htu`, the discovery document — and a
   * client names any Host (or X-Forwarded-Host) it likes: an assertion another server received could be replayed
   * here by naming that server's host. So the engine only ever sees its issuer's host.
   */
  handle(req: IncomingMessage, res: ServerResponse): void {
    req.headers.host = this.issuerHost;
    delete req.headers['x-forwarded-host'];
    delete req.headers['x-forwarded-proto'];
    this.handler(req, res);
  }

  /** UDAP-style registration of a network member (POST /oauth/register), audited whatever the answer. */
  async register(body: unknown, req: IncomingMessage): Promise<RegistrationAnswer> {
    const answer = await registerNetworkClient(body, { ...this.options, communities: this.communities });
    const ids = correlationOf(req);
    await this.options.audit.record({
      type: EVENT.securityAttributesChanged,
      action: answer.status === 200 ? 'U' : 'C',
      outcome: answer.status < 300 ? '0' : '4',
      outcomeDesc: answer.status < 300 ? undefined : `${answer.body.error}: ${answer.body.error_description}`,
      who: {
        clientId: answer.clientId,
        address: clientAddressOf(req),
        requestId: ids?.requestId,
        correlationId: ids?.correlationId,
      },
      clientRole: '110150',
      query: { raw: '', description: 'UDAP dynamic client registration' },
    });
    return answer;
  }

  /** Picks up keys written by `carevault keys rotate` and keys whose activation time has come. */
  refreshKeys(): boolean {
    this.options.keys.reloadIfChanged();
    const fingerprint = this.options.keys.fingerprint();
    if (fingerprint === this.keyFingerprint) return false;
    this.keyFingerprint = fingerprint;
    this.jwks = createLocalJWKSet({ keys: this.options.keys.publicJwks() });
    this.provider = this.build();
    this.handler = this.provider.callback();
    this.options.log.info({ keys: fingerprint.split('|')[1] }, 'signing keys changed; published JWKS updated');
    return true;
  }

  private build(): Provider {
    const { log } = this.options;
    const provider = createProvider(this.options, this.network);
    provider.use(async (ctx, next) => {
      await next();
      await this.afterRoute(ctx as KoaContextWithOIDC);
    });
    // The caller only ever learns `invalid_client`; the operator learns why (never the secret or assertion).
    for (const event of ['grant.error', 'introspection.error', 'revocation.error'] as const) {
      (provider as unknown as NodeJS.EventEmitter).on(event, (ctx: KoaContextWithOIDC, err: ClientAuthError) => {
        if (err.error !== 'invalid_client') return;
        log.warn(
          {
            event: 'client-auth-failed',
            client_id: clientIdOf(ctx),
            reason: err.error_detail ?? err.cause?.message ?? err.message,
            route: ctx.oidc?.route,
            requestId: ctx.get('x-request-id') || undefined,
          },
          'client authentication failed',
        );
      });
    }
    provider.on('server_error', (ctx: KoaContextWithOIDC, err: Error) => {
      log.error(
        { err: { message: err.message, name: err.name }, route: ctx.oidc?.route },
        'authorization server error',
      );
    });
    return provider;
  }

  private async afterRoute(ctx: KoaContextWithOIDC): Promise<void> {
    const route = ctx.oidc?.route;
    if (route === 'token') {
      ctx.set('pragma', 'no-cache');
      ctx.set('cache-control', 'no-store');
      refineGrantTypeError(ctx);
      await addLaunchContext(ctx, this.options.store);
      await this.options.audit.record(tokenEvent(ctx));
      return;
    }
    if (route === 'discovery' && ctx.status === 200) {
      extendDiscovery(ctx);
      return;
    }
    if (route !== 'introspection' && route !== 'revocation') return;
    await this.tokenManagement(ctx, route);
    if (route === 'introspection') await this.options.audit.record(introspectionEvent(ctx));
  }

  /** Introspection and revocation: caller authentication rules, and JWT access tokens, which the engine refuses. */
  private async tokenManagement(ctx: KoaContextWithOIDC, route: 'introspection' | 'revocation'): Promise<void> {
    requireCallerAuthentication(ctx);
    const body = ctx.body as { error?: string } | undefined;
    const token = (ctx.oidc.params as { token?: unknown } | undefined)?.token;
    // The engine refuses JWTs only after it has authenticated the caller; we take over from there.
    if (body?.error !== 'unsupported_token_type' || !ctx.oidc.client || typeof token !== 'string') return;
    if (route === 'introspection') {
      if (ctx.oidc.client.clientAuthMethod === 'none') {
        ctx.status = 200;
        ctx.body = { active: false };
        return;
      }
      await introspectJwt(ctx, this.verifier, this.options.clients);
    } else {
      await revokeJwt(ctx, this.verifier, this.options.store);
    }
  }

  private async findOpaque(token: string): Promise<AccessTokenClaims | undefined> {
    const { ClientCredentials, AccessToken } = this.provider;
    const found = (await ClientCredentials.find(token)) ?? (await AccessToken.find(token));
    if (!found?.isValid) return undefined;
    const t = found as unknown as {
      jti: string;
      clientId: string;
      accountId?: string;
      scope?: string;
      aud?: string | string[];
      exp: number;
      iat: number;
      extra?: Record<string, unknown>;
      'x5t#S256'?: string;
    };
    return {
      ...t.extra,
      iss: this.options.issuer,
      sub: t.accountId ?? t.clientId,
      client_id: t.clientId,
      scope: t.scope,
      aud: t.aud,
      exp: t.exp,
      iat: t.iat,
      jti: t.jti,
      ...(t['x5t#S256'] ? { cnf: { 'x5t#S256': t['x5t#S256'] } } : {}),
    };
  }
}

/**
 * RFC 6749 §5.2 names the error for an authenticated client using a grant it is not registered for
 * `unauthorized_client`; the engine says `invalid_request`.
 */
function refineGrantTypeError(ctx: KoaContextWithOIDC): void {
  const body = ctx.body as { error?: string } | undefined;
  const grantType = (ctx.oidc.params as { grant_type?: string } | undefined)?.grant_type;
  const client = ctx.oidc.client;
  if (ctx.status !== 400 || body?.error !== 'invalid_request' || !client || !grantType) return;
  if (client.grantTypes?.includes(grantType)) return;
  ctx.body = {
    error: 'unauthorized_client',
    error_description: 'this client is not registered for the requested grant type',
  };
}

/** RFC 7662 §2.1 / ITI-102: a caller that presented no credentials at all gets 401, not a generic 400. */
function requireCallerAuthentication(ctx: KoaContextWithOIDC): void {
  const body = ctx.body as { error?: string } | undefined;
  const params = (ctx.oidc.params ?? {}) as { client_id?: string; client_assertion?: string };
  if (ctx.status !== 400 || body?.error !== 'invalid_request' || ctx.oidc.client) return;
  if (ctx.get('authorization') || params.client_id || params.client_assertion) return;
  ctx.status = 401;
  ctx.set('www-authenticate', 'Basic realm="carevault"');
  ctx.body = { error: 'invalid_client', error_description: 'client authentication is required' };
}
