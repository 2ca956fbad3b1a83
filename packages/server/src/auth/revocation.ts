import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { Store } from '../store/types.ts';
import type { TokenVerifier } from './verifier.ts';

/**
 * RFC 7009 for JWT access tokens, which the engine does not store: their `jti` goes on a deny-list that
 * the verifier consults, kept until the token would have expired anyway. Only the client the token was
 * issued to may revoke it; an invalid or expired token needs no revocation and answers 200.
 */
export async function revokeJwt(ctx: KoaContextWithOIDC, verifier: TokenVerifier, store: Store): Promise<void> {
  const token = (ctx.oidc.params as { token?: string }).token ?? '';
  let claims: Awaited<ReturnType<TokenVerifier['verify']>>;
  try {
    claims = await verifier.verify(token, { checkBinding: false });
  } catch {
    ctx.status = 200;
    ctx.body = '';
    return;
  }
  if (claims.client_id !== ctx.oidc.client?.clientId) {
    const err = new errors.UnauthorizedClient('client is not authorized to revoke the presented token');
    ctx.status = err.statusCode;
    ctx.body = { error: err.error, error_description: err.error_description };
    return;
  }
  if (claims.jti && claims.exp) await store.revocations.revoke(claims.jti, claims.exp);
  ctx.status = 200;
  ctx.body = '';
}
