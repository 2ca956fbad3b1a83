import { createHash, type X509Certificate } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify } from 'jose';
import type { Store } from '../../store/types.ts';
import { ASYMMETRIC_ALGS } from '../client-keys.ts';
import { type Anchor, NO_ANCHOR, sanIdentities, TrustError, type ValidatedChain, validateChain } from './chain.ts';

/** Same limits as for registered clients' assertions (client-assertion.ts). */
const MAX_LIFETIME = 300;
const TOLERANCE = 5;

export interface VerifiedNetworkJwt {
  clientId: string;
  leaf: X509Certificate;
  community: string;
  claims: Record<string, unknown>;
}

/** Caller-chosen text in an error (and so in the audit trail) is cut short. */
const shown = (text: string) => (text.length > 100 ? `${text.slice(0, 100)}…` : text);

/** Whether a JWT carries an `x5c` header, i.e. asks to be trusted through a community CA. */
export function hasX5c(jwt: unknown): jwt is string {
  if (typeof jwt !== 'string') return false;
  try {
    return decodeProtectedHeader(jwt).x5c !== undefined;
  } catch {
    return false;
  }
}

/**
 * The chain of a client id recorded through one community must lead to that community's CA. Every community CA
 * vouches for the names it certifies, and a client's vault grants (`grant add --client`) follow its id: without
 * this, a member of a laxer community with a certificate naming another community's member took over that
 * member's record, key and grants. Once the administrator stops trusting that community (`trust remove`), its
 * members' ids are free again, as any id no community has presented yet: that is how a member moves.
 */
async function memberChain(
  clientId: string,
  x5c: unknown,
  options: { anchors: readonly Anchor[]; recordedCommunity: (clientId: string) => Promise<string | undefined> },
): Promise<ValidatedChain> {
  const recorded = await options.recordedCommunity(clientId);
  if (recorded === undefined) return validateChain(x5c, options.anchors);
  const own = options.anchors.filter((a) => a.community === recorded);
  if (own.length === 0) return validateChain(x5c, options.anchors);
  try {
    return validateChain(x5c, own);
  } catch (err) {
    if (err instanceof TrustError && err.message === NO_ANCHOR)
      throw new TrustError(
        `client "${shown(clientId)}" is a member of community "${recorded}": only a chain to that community's CA speaks for it`,
      );
    throw err;
  }
}

/**
 * A JWT signed by a network member (seed 003): a client assertion (RFC 7523) or a UDAP software statement.
 * Every rule that fails is named — the seed's own script sends a static `jti`, no `iat`, and `iss` ≠ `sub`.
 */
export async function verifyNetworkJwt(
  jwt: string,
  options: {
    anchors: readonly Anchor[];
    audiences: readonly string[];
    store: Store;
    /** What the JWT is, for messages: "client assertion" or "software statement". */
    kind: string;
    /** The community a client id is already recorded under, if any. */
    recordedCommunity: (clientId: string) => Promise<string | undefined>;
  },
): Promise<VerifiedNetworkJwt> {
  const { kind } = options;
  let header: ReturnType<typeof decodeProtectedHeader>;
  let claims: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(jwt);
    claims = decodeJwt(jwt);
  } catch {
    throw new TrustError(`the ${kind} is not a JWT`);
  }
  if (typeof header.alg !== 'string' || !(ASYMMETRIC_ALGS as readonly string[]).includes(header.alg))
    throw new TrustError(`the ${kind} alg must be one of ${ASYMMETRIC_ALGS.join(', ')}`);
  const { iss, sub } = claims;
  if (typeof iss !== 'string' || iss === '') throw new TrustError(`the ${kind} has no iss (the client id)`);
  if (typeof sub !== 'string' || sub === '') throw new TrustError(`the ${kind} has no sub (the client id)`);
  if (iss !== sub)
    throw new TrustError(`iss "${shown(iss)}" and sub "${shown(sub)}" of the ${kind} must both be the client id`);
  const { leaf, community } = await memberChain(iss, header.x5c, options);
  const names = sanIdentities(leaf);
  if (!names.includes(iss))
    throw new TrustError(
      `client id "${shown(iss)}" is not a DNS or URI subject alternative name of the leaf certificate (${shown(names.join(', ')) || 'none'})`,
    );
  try {
    await jwtVerify(jwt, leaf.publicKey, { algorithms: [...ASYMMETRIC_ALGS], clockTolerance: TOLERANCE });
  } catch (err) {
    if (err instanceof joseErrors.JWSSignatureVerificationFailed || err instanceof joseErrors.JOSEAlgNotAllowed)
      throw new TrustError(`the ${kind} is not signed by the key of the x5c leaf certificate`);
    if (err instanceof joseErrors.JWTExpired) throw new TrustError(`the ${kind} expired`);
    if (err instanceof joseErrors.JWTClaimValidationFailed)
      throw new TrustError(`the ${kind} ${err.claim} claim is invalid: ${err.reason}`);
    // jose refuses a key of another type than alg names (an RSA leaf with ES256) as unsupported or a TypeError.
    if (err instanceof joseErrors.JOSENotSupported || !(err instanceof joseErrors.JOSEError))
      throw new TrustError(`the ${kind} alg ${header.alg} does not fit the key of the x5c leaf certificate`);
    throw new TrustError(`the ${kind} is invalid: ${err.message}`);
  }
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.some((a) => typeof a === 'string' && options.audiences.includes(a)))
    throw new TrustError(`the ${kind} aud must be ${options.audiences[0]}`);
  const now = Math.floor(Date.now() / 1000);
  const { exp, iat, jti } = claims;
  if (typeof exp !== 'number') throw new TrustError(`the ${kind} has no exp`);
  if (exp > now + MAX_LIFETIME + TOLERANCE) throw new TrustError(`the ${kind} must expire within 5 minutes`);
  if (typeof iat !== 'number') throw new TrustError(`the ${kind} has no iat (issued-at time)`);
  if (iat > now + TOLERANCE) throw new TrustError(`the ${kind} iat is in the future`);
  if (typeof jti !== 'string' || jti === '' || jti.length > 256)
    throw new TrustError(`the ${kind} needs a jti (a fresh unique id, at most 256 characters)`);
  // Keyed by client as well: one member's jti says nothing about another's.
  const key = createHash('sha256').update(`${iss}\n${jti}`).digest('base64url');
  if (!(await options.store.oidc.insertIfAbsent('NetworkJti', key, exp + TOLERANCE)))
    throw new TrustError(`the ${kind} jti was already used; every ${kind} needs a fresh one`);
  return { clientId: iss, leaf, community, claims };
}
