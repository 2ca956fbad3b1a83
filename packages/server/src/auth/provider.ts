import type { X509Certificate } from 'node:crypto';
import Provider, { type Configuration, errors, type KoaContextWithOIDC } from 'oidc-provider';
import { Agent, fetch as undiciFetch } from 'undici';
import type { Store } from '../store/types.ts';
import { createAdapterFactory } from './adapter.ts';
import { assertClientAssertion } from './client-assertion.ts';
import { type ClientRegistry, grantableScopes, secretMatches } from './clients.ts';
import { renderErrorPage } from './error-page.ts';
import { iuaClaims, PurposeOfUseError } from './iua-claims.ts';
import type { KeyRing } from './keys.ts';
import { type CertificateSource, subjectMatches } from './mtls.ts';
import { assertRequestedTokenType } from './requested-token-type.ts';

export interface ProviderDeps {
  issuer: string;
  fhirBase: string;
  accessTokenTtl: number;
  store: Store;
  clients: ClientRegistry;
  keys: KeyRing;
  certificates: CertificateSource;
  /** Trust anchors for outbound fetches (client jwks_uri): the system roots plus the platform CA. */
  outboundCa: string[];
}

export const OAUTH_ROUTES = {
  authorization: '/oauth/authorize',
  token: '/oauth/token',
  introspection: '/oauth/introspect',
  revocation: '/oauth/revoke',
  jwks: '/oauth/jwks',
  userinfo: '/oauth/userinfo',
  end_session: '/oauth/session/end',
  pushed_authorization_request: '/oauth/par',
  registration: '/oauth/reg',
  code_verification: '/oauth/device',
  device_authorization: '/oauth/device/auth',
  backchannel_authentication: '/oauth/backchannel',
  challenge: '/oauth/challenge',
  credential: '/oauth/credential',
} as const;

const CLIENT_AUTH_ALGS: NonNullable<NonNullable<Configuration['enabledJWA']>['clientAuthSigningAlgValues']> = [
  'ES256',
  'ES384',
  'ES512',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
];

function requestBody(ctx: KoaContextWithOIDC): Record<string, unknown> {
  return ((ctx.oidc as unknown as { body?: Record<string, unknown> }).body ?? {}) as Record<string, unknown>;
}

/** Resource servers this AS issues tokens for: the FHIR base and (for launches) any vault under it. */
function isFhirResource(resource: string, fhirBase: string): boolean {
  if (resource === fhirBase) return true;
  if (!resource.startsWith(`${fhirBase}/`)) return false;
  return /^[A-Za-z0-9_-]{1,64}$/.test(resource.slice(fhirBase.length + 1));
}

/** The oidc-provider engine configured for carevault's SMART/IUA policy. */
export function createProvider(deps: ProviderDeps): Provider {
  const { clients, keys, certificates, fhirBase } = deps;
  const certOf = (ctx: KoaContextWithOIDC): X509Certificate | undefined =>
    certificates.certificate({ socket: ctx.req.socket, headers: ctx.req.headers });

  const configuration: Configuration = {
    adapter: createAdapterFactory(deps.store, clients),
    jwks: { keys: keys.privateJwks() as NonNullable<Configuration['jwks']>['keys'] },
    cookies: { keys: keys.cookieKeys },
    routes: OAUTH_ROUTES,
    clientAuthMethods: [
      'private_key_jwt',
      'tls_client_auth',
      'self_signed_tls_client_auth',
      'client_secret_basic',
      'client_secret_post',
      'none',
    ],
    enabledJWA: {
      clientAuthSigningAlgValues: CLIENT_AUTH_ALGS,
      idTokenSigningAlgValues: ['ES256', 'RS256'],
    },
    clientDefaults: {
      id_token_signed_response_alg: 'ES256',
      grant_types: ['client_credentials'],
      response_types: [],
    },
    responseTypes: ['code'],
    scopes: ['openid', 'offline_access'],
    clockTolerance: 5,
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // ITI-102: only authenticated callers may introspect, so public clients learn nothing here.
      introspection: { enabled: true, allowedPolicy: async (_ctx, client) => client.clientAuthMethod !== 'none' },
      revocation: {
        enabled: true,
        // RFC 7009 §2.1: only the client a token was issued to may revoke it (same rule as revocation.ts for JWTs).
        allowedPolicy: async (_ctx, client, token) => {
          if (token.clientId !== client.clientId) {
            throw new errors.UnauthorizedClient('client is not authorized to revoke the presented token');
          }
          return true;
        },
      },
      userinfo: { enabled: false },
      mTLS: {
        enabled: true,
        tlsClientAuth: true,
        selfSignedTlsClientAuth: true,
        certificateBoundAccessTokens: true,
        getCertificate: (ctx) => certOf(ctx) as unknown as string,
        certificateAuthorized: (ctx) => certificates.authorized({ socket: ctx.req.socket, headers: ctx.req.headers }),
        certificateSubjectMatches: (ctx, property, expected) => {
          const cert = certOf(ctx);
          return cert !== undefined && subjectMatches(cert, property, expected);
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => fhirBase,
        useGrantedResource: () => true,
        getResourceServerInfo: async (ctx, resource, client) => {
          if (!isFhirResource(resource, fhirBase)) {
            throw new errors.InvalidTarget(`resource "${resource}" is not served by this authorization server`);
          }
          const policy = await clients.policy(client.clientId);
          if (!policy) throw new errors.InvalidClient('client is not registered');
          assertRequestedTokenType(requestBody(ctx).requested_token_type);
          const params = ctx.oidc.params as { scope?: string };
          const { granted, refused } = grantableScopes(params.scope, policy);
          if (refused.length > 0) {
            throw new errors.InvalidScope('requested scope is not registered for this client', refused.join(' '));
          }
          if (granted.length === 0)
            throw new errors.InvalidScope('no scope requested and none registered for this client', '');
          params.scope = granted.join(' ');
          return {
            scope: granted.join(' '),
            audience: resource,
            accessTokenTTL: deps.accessTokenTtl,
            accessTokenFormat: policy.tokenFormat,
            ...(policy.tokenFormat === 'jwt'
              ? { jwt: { sign: { alg: policy.tokenAlg, kid: keys.signingKid(policy.tokenAlg) } } }
              : {}),
          };
        },
      },
    },
    extraTokenClaims: async (ctx, token) => {
      if (token.kind !== 'ClientCredentials' && token.kind !== 'AccessToken') return undefined;
      const policy = await clients.policy(token.clientId as string);
      if (!policy) return undefined;
      const requested = requestBody(ctx).purpose_of_use;
      if (requested !== undefined && typeof requested !== 'string') {
        throw new errors.InvalidRequest('purpose_of_use must be given once');
      }
      try {
        const iua = iuaClaims(policy, requested);
        return iua ? { extensions: { ihe_iua: iua } } : undefined;
      } catch (err) {
        if (err instanceof PurposeOfUseError) throw new errors.InvalidRequest(err.message);
        throw err;
      }
    },
    assertJwtClientAuthClaimsAndHeader: assertClientAssertion,
    ttl: {
      ClientCredentials: deps.accessTokenTtl,
      AccessToken: deps.accessTokenTtl,
      AuthorizationCode: 60,
      Interaction: 600,
      Session: 8 * 3600,
      Grant: 14 * 86400,
      RefreshToken: 14 * 86400,
    },
    renderError: renderErrorPage,
    fetch: outboundFetch(deps.outboundCa),
  };

  const provider = new Provider(deps.issuer, configuration);
  // Client secrets are stored hashed (see clients.ts); the engine compares through this hook.
  provider.Client.prototype.compareClientSecret = function compare(this: { clientSecret?: string }, actual: string) {
    return secretMatches(this.clientSecret, actual);
  };
  return provider;
}

/** Fetch for client JWKS URLs: bounded in time, trusting the system roots and the platform CA. */
function outboundFetch(ca: string[]): NonNullable<Configuration['fetch']> {
  const agent = new Agent({ connect: { ca, timeout: 5_000 }, headersTimeout: 5_000, bodyTimeout: 5_000 });
  return ((url: URL | string, options: Record<string, unknown>) =>
    undiciFetch(url, { ...options, dispatcher: agent } as Parameters<typeof undiciFetch>[1])) as unknown as NonNullable<
    Configuration['fetch']
  >;
}
