import type { KoaContextWithOIDC } from 'oidc-provider';

/**
 * ITI-103 / RFC 8414 additions the engine does not know: introspection may also be called by resource
 * servers with client credentials, and JWT access tokens are the default format.
 */
export function extendDiscovery(ctx: KoaContextWithOIDC): void {
  const body = ctx.body as Record<string, unknown>;
  body.access_token_format = ['urn:ietf:params:oauth:token-type:jwt'];
  body.tls_client_certificate_bound_access_tokens = true;
  // Introspection and revocation take the token endpoint's client authentication, except "none":
  // only authenticated callers may introspect (ITI-102).
  const methods = body.token_endpoint_auth_methods_supported;
  if (Array.isArray(methods)) {
    const authenticated = methods.filter((m) => m !== 'none');
    body.introspection_endpoint_auth_methods_supported = authenticated;
    body.revocation_endpoint_auth_methods_supported = authenticated;
  }
}
