import type { X509Certificate } from 'node:crypto';
import Provider, { type Configuration, errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { RegisteredIdp } from '../saml/idps.ts';
import type { Store } from '../store/types.ts';
import { createAdapterFactory } from './adapter.ts';
import { isFhirResource, vaultOf } from './audience.ts';
import { caraClaims } from './cara-claims.ts';
import { clientAssertionCheck } from './client-assertion.ts';
import { ASYMMETRIC_ALGS, outboundFetch } from './client-keys.ts';
import { type ClientRegistry, grantableScopes, mayIntrospect, secretMatches } from './clients.ts';
import { renderErrorPage } from './error-page.ts';
import { SAML2_BEARER } from './grant-types.ts';
import { saml2BearerGrant } from './grants/saml2-bearer.ts';
import { iuaClaims, PurposeOfUseError } from './iua-claims.ts';
import type { KeyRing } from './keys.ts';
import { grantContext } from './launch-context.ts';
import { type CertificateSource, subjectMatches } from './mtls.ts';
import { PERSON_OIDC_SCOPES, personResourceScopes } from './person-scopes.ts';
import { assertRequestedTokenType } from './requested-token-type.ts';
import { signInPolicy } from './sign-in-policy.ts';
import { signingKeysForEngine } from './signing-keys.ts';
import { answerStructuredTokensWithoutThrowing } from './structured-tokens.ts';
import type { NetworkClients } from './trust/network-clients.ts';
import { userContextOf } from './user-context-claims.ts';
import { OWN_ORGANIZATION_CLAIM } from './verifier.ts';

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
  /** SAML IdPs whose assertions the SAML 2.0 bearer grant accepts. */
  samlIdps: () => RegisteredIdp[];
}

/**
 * The client's own organization, when the token names a user of another one (an aggregator's professional, a
 * SAML assertion's): the token says who acts, for the audit; vault grants to an organization are for the clients
 * registered for it (vault/policy.ts `organizationsOf`), so naming an organization must not open what is granted
 * to it. '' when the client has none.
 */
function ownOrganization(iua: { subject_organization_id?: string } | undefined, orgOid: string | undefined) {
  const own = orgOid ? `urn:oid:${orgOid}` : '';
  const named = iua?.subject_organization_id;
  return named !== undefined && named !== own ? { [OWN_ORGANIZATION_CLAIM]: own } : {};
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

export const CLIENT_AUTH_METHODS = [
  'private_key_jwt',
  'tls_client_auth',
  'self_signed_tls_client_auth',
  'client_secret_basic',
  'client_secret_post',
  'none',
] as const;

export const CLIENT_AUTH_ALGS: NonNullable<NonNullable<Configuration['enabledJWA']>['clientAuthSigningAlgValues']> = [
  ...ASYMMETRIC_ALGS,
];

function requestBody(ctx: KoaContextWithOIDC): Record<string, unknown> {
  return ((ctx.oidc as unknown as { body?: Record<string, unknown> }).body ?? {}) as Record<string, unknown>;
}

/** The authorization code flow and its refreshes act for a person; client credentials for the client itself. */
function isPersonFlow(ctx: KoaContextWithOIDC): boolean {
  if (ctx.oidc.route !== 'token') return true;
  const grantType = (ctx.oidc.params as { grant_type?: string }).grant_type;
  return grantType === 'authorization_code' || grantType === 'refresh_token';
}

/** IUA 3.71.4.1.2.2 and SMART App Launch require `state` (B08); the engine treats it as optional. */
function assertState(ctx: KoaContextWithOIDC): void {
  const state = (ctx.oidc.params as { state?: unknown }).state;
  if (typeof state !== 'string' || state === '') throw new errors.InvalidRequest('state is required');
}

/** Origins of a client's registered redirect URIs: the only origins its browser app may call the token endpoint from (A17). */
function redirectOrigins(redirectUris: readonly string[]): string[] {
  return redirectUris.flatMap((u) => {
    try {
      return [new URL(u).origin];
    } catch {
      return [];
    }
  });
}

/** How long a person's consent (and the refresh tokens resting on it) lasts. */
export const GRANT_TTL_SECONDS = 90 * 86400;

/** The oidc-provider engine configured for carevault's SMART/IUA policy. */
export function createProvider(deps: ProviderDeps, network: NetworkClients): Provider {
  answerStructuredTokensWithoutThrowing();
  const { clients, keys, certificates, fhirBase } = deps;
  const certOf = (ctx: KoaContextWithOIDC): X509Certificate | undefined =>
    certificates.certificate({ socket: ctx.req.socket, headers: ctx.req.headers });

  /** SMART context claims of a token issued for a person: what the FHIR server enforces (I13, I14). */
  const personClaims = async (token: { grantId?: string; accountId?: string }) => {
    if (!token.accountId) return undefined;
    const context = await grantContext(deps.store, token.grantId);
    if (!context) return undefined;
    const top: Record<string, string> = {};
    if (context.patient) top.patient = context.patient;
    if (context.encounter) top.encounter = context.encounter;
    if (context.fhirUser && context.partition) top.fhirUser = `${fhirBase}/${context.partition}/${context.fhirUser}`;
    const carevault: { grant: string; vault?: string; host?: string } = { grant: token.grantId as string };
    if (context.partition) carevault.vault = context.partition;
    if (context.host) carevault.host = context.host;
    return { top, carevault };
  };

  const getResourceServerInfo = async (ctx: KoaContextWithOIDC, resource: string, client: { clientId: string }) => {
    if (!isFhirResource(resource, fhirBase)) {
      throw new errors.InvalidTarget(`resource "${resource}" is not served by this authorization server`);
    }
    const policy = await clients.policy(client.clientId);
    if (!policy) throw new errors.InvalidClient('client is not registered');
    assertRequestedTokenType(requestBody(ctx).requested_token_type);
    const params = ctx.oidc.params as { scope?: string; aud?: string };
    const signing =
      policy.tokenFormat === 'jwt'
        ? { jwt: { sign: { alg: policy.tokenAlg, kid: keys.signingKid(policy.tokenAlg) } } }
        : {};
    if (isPersonFlow(ctx)) {
      if (ctx.oidc.route === 'authorization') assertState(ctx);
      if (typeof params.aud === 'string' && params.aud !== resource) {
        throw new errors.InvalidTarget('aud and resource name different servers');
      }
      const partition = vaultOf(resource, fhirBase);
      if (partition !== undefined && !(await deps.store.partitions.get(partition))) {
        throw new errors.InvalidTarget(`aud "${resource}" is not a FHIR base of this server`);
      }
      const entities = ctx.oidc.entities as {
        AuthorizationCode?: { scope?: string };
        RefreshToken?: { scope?: string };
      };
      const source = params.scope ?? entities.AuthorizationCode?.scope ?? entities.RefreshToken?.scope;
      return {
        scope: personResourceScopes(source, policy).join(' '),
        audience: resource,
        accessTokenTTL: deps.accessTokenTtl,
        accessTokenFormat: policy.tokenFormat,
        ...signing,
      };
    }
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
      ...signing,
    };
  };

  const configuration: Configuration = {
    adapter: createAdapterFactory(deps.store, clients, network),
    jwks: { keys: signingKeysForEngine(keys.privateJwks()) as NonNullable<Configuration['jwks']>['keys'] },
    cookies: { keys: keys.cookieKeys },
    routes: OAUTH_ROUTES,
    clientAuthMethods: [...CLIENT_AUTH_METHODS],
    enabledJWA: {
      clientAuthSigningAlgValues: CLIENT_AUTH_ALGS,
      idTokenSigningAlgValues: ['ES256', 'RS256'],
    },
    clientDefaults: {
      // Inferno (A19, C19) expects RS256 id_tokens.
      id_token_signed_response_alg: 'RS256',
      grant_types: ['client_credentials'],
      response_types: [],
    },
    responseTypes: ['code'],
    scopes: [...PERSON_OIDC_SCOPES],
    claims: { openid: ['sub'], fhirUser: ['fhirUser'] },
    // SMART: `launch` binds an EHR launch context; `aud` names the FHIR base (a synonym of `resource`, X8).
    extraParams: ['launch', 'aud'],
    pkce: { required: () => true },
    // Every authorization asks for consent anew: each launch carries its own context (see interaction/).
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId;
      return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
    },
    rotateRefreshToken: true,
    issueRefreshToken: async (_ctx, client, code) =>
      client.grantTypeAllowed('refresh_token') &&
      (code.scopes.has('offline_access') || code.scopes.has('online_access')),
    clientBasedCORS: (_ctx, origin, client) =>
      origin !== 'null' && redirectOrigins(client.redirectUris ?? []).includes(origin),
    interactions: { url: (_ctx, interaction) => `/oauth/interaction/${interaction.uid}`, policy: signInPolicy() },
    findAccount: async (ctx, sub) => {
      const user = await deps.store.users.get(sub);
      if (!user || user.disabled) return undefined;
      return {
        accountId: sub,
        claims: async () => {
          const grantId = (ctx.oidc.entities.Grant as { jti?: string } | undefined)?.jti;
          const context = await grantContext(deps.store, grantId);
          const partition = context?.partition ?? user.partition;
          const rel = context?.fhirUser ?? (partition === user.partition ? user.fhirUser : undefined);
          return { sub, ...(rel && partition ? { fhirUser: `${fhirBase}/${partition}/${rel}` } : {}) };
        },
      };
    },
    clockTolerance: 5,
    features: {
      devInteractions: { enabled: false },
      // Our keys sign in process through this hook (auth/signing-keys.ts); the ack makes an engine update that
      // changes the experiment refuse to start instead of signing differently.
      externalSigningSupport: { enabled: true, ack: 'experimental-01' },
      clientCredentials: { enabled: true },
      // ITI-102: only authenticated callers may introspect, so public clients learn nothing here.
      introspection: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) =>
          client.clientAuthMethod !== 'none' && mayIntrospect(clients, client.clientId, token.clientId),
      },
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
        defaultResource: (ctx) => {
          const aud = (ctx.oidc.params as { aud?: unknown }).aud;
          if (ctx.oidc.route === 'authorization' || ctx.oidc.route === 'resume') {
            assertState(ctx);
            // SMART App Launch: `aud` is required and names the FHIR server the app will use (B09).
            if (typeof aud !== 'string' || aud === '') {
              throw new errors.InvalidRequest('aud (the FHIR base URL) is required');
            }
            return aud;
          }
          return fhirBase;
        },
        useGrantedResource: () => true,
        getResourceServerInfo,
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
        const asserted = token.kind === 'ClientCredentials' ? userContextOf(ctx.req) : undefined;
        const iua = iuaClaims(policy, requested, asserted);
        const person = await personClaims(token as unknown as { grantId?: string; accountId?: string });
        const cara = person ? {} : caraClaims(policy);
        const community = policy.community ? { 'carevault:community': policy.community } : {};
        if (!iua && !person && Object.keys(cara).length === 0 && !policy.community) return undefined;
        return {
          ...cara,
          ...community,
          ...ownOrganization(iua, policy.orgOid),
          ...person?.top,
          ...(iua || person
            ? { extensions: { ...(iua ? { ihe_iua: iua } : {}), ...(person ? { carevault: person.carevault } : {}) } }
            : {}),
        };
      } catch (err) {
        if (err instanceof PurposeOfUseError) throw new errors.InvalidRequest(err.message);
        throw err;
      }
    },
    assertJwtClientAuthClaimsAndHeader: clientAssertionCheck(clients),
    ttl: {
      ClientCredentials: deps.accessTokenTtl,
      AccessToken: deps.accessTokenTtl,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 8 * 3600,
      Grant: GRANT_TTL_SECONDS,
      // N35: refresh tokens stay valid for months (each rotation starts a new period).
      RefreshToken: GRANT_TTL_SECONDS,
    },
    renderError: renderErrorPage,
    fetch: outboundFetch(deps.outboundCa) as unknown as NonNullable<Configuration['fetch']>,
  };

  const provider = new Provider(deps.issuer, configuration);
  provider.registerGrantType(
    SAML2_BEARER,
    saml2BearerGrant({
      tokenEndpoint: `${deps.issuer}${OAUTH_ROUTES.token}`,
      fhirBase,
      store: deps.store,
      idps: deps.samlIdps,
      resourceServerInfo: (ctx, resource) =>
        getResourceServerInfo(ctx, resource, ctx.oidc.client as unknown as { clientId: string }),
      certificate: certOf,
    }),
    ['assertion', 'scope'],
  );
  // Client secrets are stored hashed (see clients.ts); the engine compares through this hook.
  provider.Client.prototype.compareClientSecret = function compare(this: { clientSecret?: string }, actual: string) {
    return secretMatches(this.clientSecret, actual);
  };
  return provider;
}
