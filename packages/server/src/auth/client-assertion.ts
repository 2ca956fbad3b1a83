import { type ClientMetadata, errors, type KoaContextWithOIDC } from 'oidc-provider';

/** SMART backend services: an assertion may live at most five minutes (plus clock tolerance). */
const MAX_ASSERTION_LIFETIME = 300;
const TOLERANCE = 5;

/**
 * Checks on RFC 7523 client assertions beyond the engine's (which already verifies signature, alg, iss, aud,
 * exp and jti replay): `sub` = client_id, a bounded lifetime, and `jku` only when it is the registered JWKS URL.
 */
export async function assertClientAssertion(
  _ctx: KoaContextWithOIDC,
  claims: Record<string, unknown>,
  header: Record<string, unknown>,
  client: { clientId: string; metadata(): ClientMetadata },
): Promise<void> {
  if (claims.sub !== client.clientId) {
    throw new errors.InvalidClientAuth('sub (JWT subject) must be the client_id');
  }
  const now = Math.floor(Date.now() / 1000);
  const exp = claims.exp as number;
  if (typeof exp !== 'number' || exp > now + MAX_ASSERTION_LIFETIME + TOLERANCE) {
    throw new errors.InvalidClientAuth('client assertion must expire within 5 minutes');
  }
  if (typeof claims.iat === 'number' && claims.iat > now + TOLERANCE) {
    throw new errors.InvalidClientAuth('client assertion iat is in the future');
  }
  if (header.jku !== undefined && header.jku !== client.metadata().jwks_uri) {
    throw new errors.InvalidClientAuth('jku is not the registered JWKS URL of this client');
  }
}
