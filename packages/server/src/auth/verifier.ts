import type { X509Certificate } from 'node:crypto';
import { type JWTPayload, type JWTVerifyGetKey, errors as joseErrors, jwtVerify } from 'jose';
import { LRUCache } from 'lru-cache';
import { x5tS256 } from './mtls.ts';

/** The client's own organization in a token that names a user of another one (auth/provider.ts). */
export const OWN_ORGANIZATION_CLAIM = 'carevault:organization';

/** Claims of a verified access token (RFC 9068 + IUA + RFC 8705). */
export interface AccessTokenClaims extends JWTPayload {
  client_id?: string;
  [OWN_ORGANIZATION_CLAIM]?: string;
  scope?: string;
  cnf?: { 'x5t#S256'?: string };
  extensions?: { ihe_iua?: Record<string, unknown>; carevault?: PersonClaims };
  /** SMART launch context of a person's token (token response fields, repeated in the token). */
  patient?: string;
  encounter?: string;
  fhirUser?: string;
}

/** carevault's claims in a token issued to an app acting for a person (authorization code flow). */
export interface PersonClaims {
  /** The grant (consent) the token rests on; withdrawn or revoked grants end the token at once. */
  grant?: string;
  /** The vault the launch bound the token to; absent when the user may use any of their vaults. */
  vault?: string;
  /** EHR launch: the EHR host client whose grants bound the user in `vault`. */
  host?: string;
}

/** Why a token was refused; `code` is the RFC 6750 error for WWW-Authenticate. */
export class TokenVerificationError extends Error {
  readonly code = 'invalid_token';
}

export interface VerifierOptions {
  issuer: string;
  /** Accepted audiences; a token is accepted when any of its `aud` values is accepted. Omit to skip (introspection). */
  audience?: (aud: string) => boolean;
  /** Resolves the signing key (local JWKS, or jose's createRemoteJWKSet for a remote AS). */
  keys: () => JWTVerifyGetKey;
  isRevoked?: (jti: string) => Promise<boolean>;
  /** Looks up an opaque (non-JWT) token; undefined when unknown or inactive. */
  opaque?: (token: string) => Promise<AccessTokenClaims | undefined>;
  algorithms?: string[];
  clockToleranceSeconds?: number;
  cacheSize?: number;
}

const DEFAULT_ALGS = ['ES256', 'ES384', 'RS256', 'RS384', 'PS256'];
const JWT_SHAPE = /^[\w-]+\.[\w-]+\.[\w-]+$/;

/**
 * Verifies bearer access tokens for a resource server: signature and alg (never none/HS*), `typ: at+jwt`,
 * iss, aud, exp, revocation and the RFC 8705 certificate binding. Signature checks are cached until `exp`
 * because an ES256 verify costs more than a whole FHIR read; revocation and binding are checked every time.
 */
export class TokenVerifier {
  private readonly cache: LRUCache<string, AccessTokenClaims>;

  constructor(private readonly options: VerifierOptions) {
    this.cache = new LRUCache({ max: options.cacheSize ?? 10_000, ttlAutopurge: false });
  }

  /**
   * `certificate` is the client certificate of the request; `checkBinding: false` is for the AS itself
   * (introspection, revocation), where the caller is not the token holder.
   */
  async verify(
    token: string,
    options: { certificate?: X509Certificate | undefined; checkBinding?: boolean } = {},
  ): Promise<AccessTokenClaims> {
    const presented = options.certificate;
    const claims = JWT_SHAPE.test(token) ? await this.verifyJwt(token) : await this.verifyOpaque(token);
    if (claims.jti && this.options.isRevoked && (await this.options.isRevoked(claims.jti))) {
      throw new TokenVerificationError('token has been revoked');
    }
    const bound = claims.cnf?.['x5t#S256'];
    if (bound !== undefined && options.checkBinding !== false) {
      if (!presented) throw new TokenVerificationError('token is bound to a client certificate that was not presented');
      if (x5tS256(presented) !== bound)
        throw new TokenVerificationError('token is bound to a different client certificate');
    }
    return claims;
  }

  private async verifyOpaque(token: string): Promise<AccessTokenClaims> {
    const claims = token.length <= 512 ? await this.options.opaque?.(token) : undefined;
    if (!claims) throw new TokenVerificationError('token is not active');
    this.checkAudience(claims);
    return claims;
  }

  private async verifyJwt(token: string): Promise<AccessTokenClaims> {
    const now = Math.floor(Date.now() / 1000);
    const cached = this.cache.get(token);
    if (cached && (cached.exp ?? 0) > now) return cached;
    let payload: AccessTokenClaims;
    try {
      ({ payload } = await jwtVerify<AccessTokenClaims>(token, this.options.keys(), {
        issuer: this.options.issuer,
        typ: 'at+jwt',
        algorithms: this.options.algorithms ?? DEFAULT_ALGS,
        clockTolerance: this.options.clockToleranceSeconds ?? 5,
        requiredClaims: ['exp', 'iat', 'jti'],
      }));
    } catch (err) {
      throw new TokenVerificationError(describeJoseError(err));
    }
    this.checkAudience(payload);
    this.cache.set(token, payload, { ttl: Math.max(1, ((payload.exp ?? now) - now) * 1000) });
    return payload;
  }

  private checkAudience(claims: AccessTokenClaims): void {
    const accept = this.options.audience;
    if (!accept) return;
    const auds = Array.isArray(claims.aud) ? claims.aud : claims.aud ? [claims.aud] : [];
    if (!auds.some(accept)) throw new TokenVerificationError('token audience is not this resource server');
  }
}

function describeJoseError(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'token has expired';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'token signature is invalid';
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'token was signed with an unknown key';
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'token signing algorithm is not accepted';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `token claim "${err.claim}" is invalid`;
  return 'token is malformed or not signed by this issuer';
}
