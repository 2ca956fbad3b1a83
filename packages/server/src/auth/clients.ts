import { createHash, randomBytes, timingSafeEqual, X509Certificate } from 'node:crypto';
import type { JWK } from 'jose';
import type { ClientRecord, Store } from '../store/types.ts';
import { SAML2_BEARER } from './grant-types.ts';
import { isCovered, looksLikeSmartScope, parseSmartScope, splitScope } from './smart-scopes.ts';

export const AUTH_METHODS = [
  'tls_client_auth',
  'self_signed_tls_client_auth',
  'private_key_jwt',
  'client_secret_basic',
  'client_secret_post',
  'none',
] as const;
export type AuthMethod = (typeof AUTH_METHODS)[number];

/** What carevault itself knows about a client, beside the engine's OAuth metadata. */
export interface ClientPolicy {
  /** Scopes the client may be granted; SMART scopes here also cover narrower requests. */
  scopes: string[];
  orgOid?: string | undefined;
  orgName?: string | undefined;
  /** GLN of the organization (CARA identifies organizations by GLN as well as by OID). */
  orgGln?: string | undefined;
  /** The client's own CARA account (`cara:accountUrn`). */
  accountUrn?: string | undefined;
  /** IUA subject_role codes (system|code). */
  roles?: string[] | undefined;
  /** IUA purpose_of_use codes (system|code) the client may claim; the first is the default. */
  purposeOfUse?: string[] | undefined;
  tokenFormat: 'jwt' | 'opaque';
  tokenAlg: 'ES256' | 'RS256';
  /** A resource server may introspect every client's tokens (ITI-102); other callers only their own. */
  resourceServer?: boolean | undefined;
  /**
   * The client may assert the user context (IUA `subject_*`, `purpose_of_use`) in its client assertion and send
   * `X-ZV-Context` (seed 001): `self` for its own organization, `aggregator` when acting for other organizations.
   */
  userContext?: 'self' | 'aggregator' | undefined;
  /**
   * A network client of this trust community (seed 003): not registered by an operator, it authenticates with
   * an `x5c` assertion each time, and its record follows its current certificate.
   */
  community?: string | undefined;
  /** The network client registered itself (UDAP) for these scopes rather than taking the community's. */
  registered?: boolean | undefined;
}

export interface StoredMetadata {
  oidc: Record<string, unknown>;
  carevault: ClientPolicy;
}

export class ClientInputError extends Error {}

export interface NewClient {
  clientId: string;
  auth: AuthMethod;
  scopes: string[];
  orgOid?: string | undefined;
  orgName?: string | undefined;
  orgGln?: string | undefined;
  accountUrn?: string | undefined;
  roles?: string[] | undefined;
  purposeOfUse?: string[] | undefined;
  jwks?: { keys: JWK[] } | undefined;
  jwksUri?: string | undefined;
  /** PEM of the certificate a self_signed_tls_client_auth client registers. */
  selfSignedCertPem?: string | undefined;
  redirectUris?: string[] | undefined;
  /** Shown to people on the login and consent pages. */
  name?: string | undefined;
  tokenFormat?: 'jwt' | 'opaque' | undefined;
  tokenAlg?: 'ES256' | 'RS256' | undefined;
  resourceServer?: boolean | undefined;
  userContext?: 'self' | 'aggregator' | undefined;
  /** May use the SAML 2.0 bearer grant (RFC 7522) besides client_credentials. */
  samlBearer?: boolean | undefined;
}

/** CARA's technical users are named like `tcu-bestclinic/scp-importer`: a `/` may separate two parts. */
const CLIENT_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._~-]{0,63}(\/[A-Za-z0-9][A-Za-z0-9._~-]{0,62})?$/;
const OID_RE = /^[0-2](\.(0|[1-9][0-9]*))+$/;
const SECRET_PREFIX = 'sha256:';

/**
 * Client secrets are 256-bit random values we generate, so a single SHA-256 is enough to make a leaked
 * database useless (a slow KDF adds nothing against a secret that cannot be guessed).
 */
export function hashSecret(secret: string): string {
  return SECRET_PREFIX + createHash('sha256').update(secret).digest('base64url');
}

export function secretMatches(stored: string | undefined, presented: string): boolean {
  if (!stored?.startsWith(SECRET_PREFIX)) return false;
  const a = Buffer.from(stored);
  const b = Buffer.from(hashSecret(presented));
  return a.length === b.length && timingSafeEqual(a, b);
}

export function validateScopes(scopes: string[]): void {
  for (const s of scopes) {
    if (!/^[\x21\x23-\x5B\x5D-\x7E]+$/.test(s))
      throw new ClientInputError(`scope "${s}" has characters RFC 6749 does not allow`);
    if (looksLikeSmartScope(s) && !parseSmartScope(s)) {
      throw new ClientInputError(
        `scope "${s}" is not a valid SMART scope (e.g. system/Observation.rs or system/*.read)`,
      );
    }
  }
}

function publicJwks(jwks: { keys: JWK[] } | undefined): { keys: JWK[] } | undefined {
  if (!jwks) return undefined;
  if (!Array.isArray(jwks.keys) || jwks.keys.length === 0)
    throw new ClientInputError('JWKS must have a non-empty "keys" array');
  for (const k of jwks.keys) {
    if (typeof k !== 'object' || k === null || typeof k.kty !== 'string')
      throw new ClientInputError('every JWK needs "kty"');
    if ('d' in k || k.kty === 'oct')
      throw new ClientInputError('JWKS must contain public keys only (found private or symmetric key material)');
    if (!k.kid) throw new ClientInputError('every JWK needs a "kid" (SMART key selection relies on it)');
  }
  return jwks;
}

/**
 * How long a looked-up client is reused. A token request reads its client three times (engine, scope
 * policy, IUA claims); a change made by the CLI in another process is seen within this time.
 */
const CACHE_MS = 1000;

export class ClientRegistry {
  private readonly cache = new Map<string, { at: number; record: ClientRecord | undefined }>();

  constructor(private readonly store: Store) {}

  private async record(clientId: string): Promise<ClientRecord | undefined> {
    const now = Date.now();
    const hit = this.cache.get(clientId);
    if (hit && now - hit.at < CACHE_MS) return hit.record;
    const record = await this.store.clients.get(clientId);
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(clientId, { at: now, record });
    return record;
  }

  async register(input: NewClient): Promise<{ clientId: string; clientSecret?: string }> {
    if (!CLIENT_ID_RE.test(input.clientId)) {
      throw new ClientInputError(
        'client_id must be 1-128 characters of A-Z a-z 0-9 . _ ~ - (one / allowed between two parts) and start with a letter or digit',
      );
    }
    if (await this.store.clients.get(input.clientId))
      throw new ClientInputError(`client "${input.clientId}" already exists`);
    validateScopes(input.scopes);
    // Keys given for another method would be stored and never used: the client would not authenticate as meant.
    if ((input.jwks || input.jwksUri) && input.auth !== 'private_key_jwt') {
      throw new ClientInputError(`--jwks and --jwks-uri go with --auth private_key_jwt, not ${input.auth}`);
    }
    if (input.userContext && input.auth !== 'private_key_jwt') {
      throw new ClientInputError(
        '--assert-user-context needs --auth private_key_jwt (the context is a signed assertion)',
      );
    }
    if (input.userContext === 'self' && !input.orgOid) {
      throw new ClientInputError(
        '--assert-user-context needs --org-oid (or --aggregator for a client acting for others)',
      );
    }
    if (input.orgOid !== undefined && !OID_RE.test(input.orgOid.replace(/^urn:oid:/, ''))) {
      throw new ClientInputError(
        `organization OID "${input.orgOid}" is not a dotted OID such as 2.16.840.1.113883.2.4.6.1`,
      );
    }
    const oidc: Record<string, unknown> = {
      client_id: input.clientId,
      token_endpoint_auth_method: input.auth,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    };
    let clientSecret: string | undefined;
    switch (input.auth) {
      case 'tls_client_auth':
        // The platform CA issues the certificate with CN = client_id (seed 000: registration issues a certificate).
        oidc.tls_client_auth_subject_dn = `CN=${input.clientId}`;
        oidc.tls_client_certificate_bound_access_tokens = true;
        break;
      case 'self_signed_tls_client_auth': {
        if (!input.selfSignedCertPem)
          throw new ClientInputError('self_signed_tls_client_auth needs the client certificate');
        let cert: X509Certificate;
        try {
          cert = new X509Certificate(input.selfSignedCertPem);
        } catch {
          throw new ClientInputError('the client certificate is not a PEM X.509 certificate');
        }
        const jwk = cert.publicKey.export({ format: 'jwk' }) as JWK;
        oidc.jwks = {
          keys: [
            {
              ...jwk,
              kid: `cert-${cert.fingerprint256.replace(/:/g, '').slice(0, 16)}`,
              x5c: [cert.raw.toString('base64')],
            },
          ],
        };
        oidc.tls_client_certificate_bound_access_tokens = true;
        break;
      }
      case 'private_key_jwt':
        if (!input.jwks === !input.jwksUri)
          throw new ClientInputError('private_key_jwt needs exactly one of --jwks FILE or --jwks-uri URL');
        if (input.jwks) oidc.jwks = publicJwks(input.jwks);
        if (input.jwksUri) {
          let u: URL;
          try {
            u = new URL(input.jwksUri);
          } catch {
            throw new ClientInputError(`jwks_uri "${input.jwksUri}" is not an absolute URL`);
          }
          if (u.protocol !== 'https:' && u.protocol !== 'http:')
            throw new ClientInputError('jwks_uri must be an http(s) URL');
          oidc.jwks_uri = u.href;
        }
        break;
      case 'client_secret_basic':
      case 'client_secret_post':
        clientSecret = randomBytes(32).toString('base64url');
        oidc.client_secret = hashSecret(clientSecret);
        break;
      case 'none':
        if (!input.redirectUris?.length)
          throw new ClientInputError('a public client (auth none) needs at least one --redirect-uri');
        oidc.grant_types = ['authorization_code', 'refresh_token'];
        oidc.response_types = ['code'];
        break;
      default:
        throw new ClientInputError(`unknown auth method; use one of ${AUTH_METHODS.join(', ')}`);
    }
    if (input.name !== undefined) {
      if (!/^[\p{L}\p{N}\p{P}\p{Zs}\p{S}]{1,100}$/u.test(input.name) || /[<>]/.test(input.name))
        throw new ClientInputError('--name must be 1-100 printable characters');
      oidc.client_name = input.name;
    }
    if (input.redirectUris?.length) {
      for (const uri of input.redirectUris) {
        let u: URL;
        try {
          u = new URL(uri);
        } catch {
          throw new ClientInputError(`redirect URI "${uri}" is not an absolute URL`);
        }
        if (u.hash) throw new ClientInputError(`redirect URI "${uri}" must not have a fragment`);
      }
      oidc.redirect_uris = input.redirectUris;
      if (input.auth !== 'none') {
        oidc.grant_types = ['client_credentials', 'authorization_code', 'refresh_token'];
        oidc.response_types = ['code'];
      }
    }
    if (input.samlBearer) {
      if (input.auth === 'none') throw new ClientInputError('--saml-bearer needs an authenticated client');
      oidc.grant_types = [...(oidc.grant_types as string[]), SAML2_BEARER];
    }
    if (input.orgGln !== undefined && !/^\d{13}$/.test(input.orgGln))
      throw new ClientInputError(`GLN "${input.orgGln}" is not 13 digits`);
    if (
      input.accountUrn !== undefined &&
      !/^urn:cara:account:[A-Za-z0-9][A-Za-z0-9_./-]{0,127}$/.test(input.accountUrn)
    )
      throw new ClientInputError(`account URN "${input.accountUrn}" must look like urn:cara:account:<id>`);
    const policy: ClientPolicy = {
      scopes: input.scopes,
      orgOid: input.orgOid?.replace(/^urn:oid:/, ''),
      orgName: input.orgName,
      ...(input.orgGln ? { orgGln: input.orgGln } : {}),
      ...(input.accountUrn ? { accountUrn: input.accountUrn } : {}),
      roles: input.roles,
      purposeOfUse: input.purposeOfUse,
      tokenFormat: input.tokenFormat ?? 'jwt',
      tokenAlg: input.tokenAlg ?? 'ES256',
      ...(input.resourceServer ? { resourceServer: true } : {}),
      ...(input.userContext ? { userContext: input.userContext } : {}),
    };
    const metadata: StoredMetadata = { oidc, carevault: policy };
    await this.store.clients.insert({
      clientId: input.clientId,
      metadata: metadata as unknown as Record<string, unknown>,
      disabled: false,
      createdAt: Math.floor(Date.now() / 1000),
    });
    this.cache.delete(input.clientId);
    return clientSecret ? { clientId: input.clientId, clientSecret } : { clientId: input.clientId };
  }

  /**
   * Stores the metadata of a network client (auth/trust/network-record.ts builds it); written only when it
   * changed, and an existing row keeps its `disabled` flag.
   */
  async saveMetadata(clientId: string, metadata: { oidc: Record<string, unknown>; carevault: ClientPolicy }) {
    const existing = await this.store.clients.get(clientId);
    if (existing && JSON.stringify(existing.metadata) === JSON.stringify(metadata)) return;
    await this.store.clients.save({
      clientId,
      metadata: metadata as unknown as Record<string, unknown>,
      disabled: false,
      createdAt: Math.floor(Date.now() / 1000),
    });
    this.cache.delete(clientId);
  }

  /** The OAuth metadata and policy as stored, disabled or not (undefined when unknown). */
  async stored(clientId: string): Promise<(StoredMetadata & { disabled: boolean }) | undefined> {
    const record = await this.record(clientId);
    return record ? { ...(record.metadata as unknown as StoredMetadata), disabled: record.disabled } : undefined;
  }

  /** OAuth metadata as the engine sees it; undefined for unknown or disabled clients. */
  async engineMetadata(clientId: string): Promise<Record<string, unknown> | undefined> {
    const record = await this.record(clientId);
    if (!record || record.disabled) return undefined;
    return (record.metadata as unknown as StoredMetadata).oidc;
  }

  async policy(clientId: string): Promise<ClientPolicy | undefined> {
    const record = await this.record(clientId);
    if (!record || record.disabled) return undefined;
    return (record.metadata as unknown as StoredMetadata).carevault;
  }

  /** Public view for `client list/show`: never the secret hash. */
  async describe(clientId?: string) {
    const records = clientId
      ? [await this.store.clients.get(clientId)].filter((r) => r !== undefined)
      : await this.store.clients.list();
    return records.map((r) => {
      const { oidc, carevault } = r.metadata as unknown as StoredMetadata;
      return {
        client_id: r.clientId,
        name: oidc.client_name,
        auth: oidc.token_endpoint_auth_method,
        disabled: r.disabled,
        scope: carevault.scopes.join(' '),
        org_oid: carevault.orgOid,
        org_name: carevault.orgName,
        org_gln: carevault.orgGln,
        account_urn: carevault.accountUrn,
        tls_client_auth_subject_dn: oidc.tls_client_auth_subject_dn,
        jwks_uri: oidc.jwks_uri,
        redirect_uris: oidc.redirect_uris,
        token_format: carevault.tokenFormat,
        resource_server: carevault.resourceServer === true,
        user_context: carevault.userContext ?? 'none',
        ...(carevault.community ? { community: carevault.community } : {}),
        grant_types: oidc.grant_types,
        created_at: new Date(r.createdAt * 1000).toISOString(),
      };
    });
  }

  async setDisabled(clientId: string, disabled: boolean): Promise<boolean> {
    this.cache.delete(clientId);
    return this.store.clients.setDisabled(clientId, disabled);
  }
}

/**
 * ITI-102 is for resource servers: a token's own client may introspect it, and so may a client registered
 * as a resource server. Anyone else learns `{"active": false}`, as for a token that does not exist.
 */
export async function mayIntrospect(
  registry: ClientRegistry,
  callerId: string,
  tokenClientId: unknown,
): Promise<boolean> {
  if (callerId === tokenClientId) return true;
  return (await registry.policy(callerId))?.resourceServer === true;
}

/** Scopes to grant for a token request: all registered ones when none were asked for, else the request if covered. */
export function grantableScopes(
  requested: string | undefined,
  policy: ClientPolicy,
): { granted: string[]; refused: string[] } {
  const asked = splitScope(requested);
  if (asked.length === 0) return { granted: [...policy.scopes], refused: [] };
  const refused = asked.filter((s) => !isCovered(s, policy.scopes));
  return { granted: asked.filter((s) => !refused.includes(s)), refused };
}
