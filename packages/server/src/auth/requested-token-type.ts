import { errors } from 'oidc-provider';

/** IUA 3.71.4.1.2.1: a client may ask for a token type; we issue JWT (or opaque) access tokens, not SAML. */
const SUPPORTED = new Set(['urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:access_token']);

export function assertRequestedTokenType(value: unknown): void {
  if (value === undefined) return;
  if (typeof value !== 'string') throw new errors.InvalidRequest('requested_token_type must be given once');
  if (!SUPPORTED.has(value)) {
    throw new errors.InvalidRequest(
      `requested_token_type "${value}" is not supported; use urn:ietf:params:oauth:token-type:jwt`,
    );
  }
}
