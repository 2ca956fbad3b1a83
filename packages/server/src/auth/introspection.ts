import type { KoaContextWithOIDC } from 'oidc-provider';
import { type ClientRegistry, mayIntrospect } from './clients.ts';
import type { TokenVerifier } from './verifier.ts';

/**
 * RFC 7662 / ITI-102 for JWT access tokens. The engine authenticates the caller and then refuses JWTs
 * ("unsupported_token_type"); we answer for those from the verifier and the revocation deny-list.
 * Unknown, expired, revoked or foreign tokens, and tokens the caller may not introspect, are `{"active":false}` and nothing else.
 */
export async function introspectJwt(
  ctx: KoaContextWithOIDC,
  verifier: TokenVerifier,
  clients: ClientRegistry,
): Promise<void> {
  const token = (ctx.oidc.params as { token?: string }).token ?? '';
  ctx.status = 200;
  ctx.set('cache-control', 'no-store');
  try {
    const claims = await verifier.verify(token, { checkBinding: false });
    const caller = ctx.oidc.client?.clientId ?? '';
    ctx.body = (await mayIntrospect(clients, caller, claims.client_id))
      ? { ...claims, active: true, token_type: 'Bearer' }
      : { active: false };
  } catch {
    ctx.body = { active: false };
  }
}
