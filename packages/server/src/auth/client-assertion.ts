import { type ClientMetadata, errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { ClientRegistry } from './clients.ts';
import { networkRefusal } from './trust/network-clients.ts';
import { assertedUserContext, rememberUserContext, UserContextError } from './user-context-claims.ts';

/** SMART backend services: an assertion may live at most five minutes (plus clock tolerance). */
const MAX_ASSERTION_LIFETIME = 300;
const TOLERANCE = 5;

type AssertionCheck = (
  ctx: KoaContextWithOIDC,
  claims: Record<string, unknown>,
  header: Record<string, unknown>,
  client: { clientId: string; metadata(): ClientMetadata },
) => Promise<void>;

/**
 * Checks on RFC 7523 client assertions beyond the engine's (which already verifies signature, alg, iss, aud,
 * exp and jti replay): `sub` = client_id, a bounded lifetime, `jku` only when it is the registered JWKS URL,
 * and an asserted user context only from a client registered for it (kept for the token, see provider.ts).
 */
export function clientAssertionCheck(clients: ClientRegistry): AssertionCheck {
  return async (ctx, claims, header, client) => {
    assertClientAssertion(claims, header, client);
    const policy = await clients.policy(client.clientId);
    // A network member is trusted through its chain, which must therefore be validated every time.
    if (policy?.community !== undefined && header.x5c === undefined)
      throw networkRefusal('a member of a trust community must send its certificate chain (x5c) in every assertion');
    let context: ReturnType<typeof assertedUserContext>;
    try {
      context = assertedUserContext(claims, policy);
    } catch (err) {
      if (err instanceof UserContextError) throw new errors.InvalidClientAuth(err.message);
      throw err;
    }
    if (!context) return;
    const grantType = (ctx.oidc.params as { grant_type?: unknown } | undefined)?.grant_type;
    if (ctx.oidc.route === 'token' && grantType !== 'client_credentials') {
      throw new errors.InvalidRequest('a user context in the client assertion is for client_credentials only');
    }
    rememberUserContext(ctx.req, context);
  };
}

function assertClientAssertion(
  claims: Record<string, unknown>,
  header: Record<string, unknown>,
  client: { clientId: string; metadata(): ClientMetadata },
): void {
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
