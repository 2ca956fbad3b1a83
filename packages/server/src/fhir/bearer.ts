import type { X509Certificate } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { type AccessTokenClaims, TokenVerificationError, type TokenVerifier } from '../auth/verifier.ts';
import { limiterOf } from '../http/rate-limit.ts';
import { FhirError } from './errors.ts';

const REALM = 'Bearer realm="carevault"';

/**
 * ITI-72 / RFC 6750: the access token comes in the Authorization header only. Missing → 401 with a bare
 * challenge; unusable → 401 invalid_token; malformed header → 400 invalid_request.
 */
export async function authenticate(
  req: FastifyRequest,
  verifier: TokenVerifier,
  certificate: X509Certificate | undefined,
  audiences: readonly string[],
): Promise<AccessTokenClaims> {
  const raw = req.raw.rawHeaders.filter(
    (_, i) => i % 2 === 0 && req.raw.rawHeaders[i]?.toLowerCase() === 'authorization',
  );
  if (raw.length > 1) throw challenge(400, 'invalid_request', 'send exactly one Authorization header');
  const header = req.headers.authorization;
  const query = req.query as Record<string, unknown>;
  if (query.access_token !== undefined) {
    throw challenge(401, 'invalid_request', 'access tokens are accepted in the Authorization header only');
  }
  if (!header) throw new FhirError(401, 'login', 'authentication required', { 'www-authenticate': REALM });
  const m = /^Bearer(?: +(.*))?$/i.exec(header);
  if (!m) throw new FhirError(401, 'login', 'use the Bearer authentication scheme', { 'www-authenticate': REALM });
  const token = m[1]?.trim();
  if (!token) throw challenge(400, 'invalid_request', 'the Bearer token is empty');
  const limiter = limiterOf(req.raw);
  let claims: AccessTokenClaims;
  try {
    claims = await verifier.verify(token, { certificate });
  } catch (err) {
    if (err instanceof TokenVerificationError) {
      // Unusable tokens count against the address, so guessing tokens is throttled too.
      if (limiter && !(await limiter.take(`ip:${req.ip}`)).allowed) throw throttled(1);
      throw challenge(401, 'invalid_token', err.message);
    }
    throw err;
  }
  if (limiter) {
    // An app used by many people has one bucket per person, a technical user one per client.
    const key = claims.extensions?.carevault ? `user:${claims.client_id}:${claims.sub}` : `client:${claims.client_id}`;
    const d = await limiter.take(key);
    if (!d.allowed) throw throttled(d.retryAfterSeconds);
  }
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.some((a) => a !== undefined && audiences.includes(a))) {
    throw challenge(401, 'invalid_token', 'the token is not for this FHIR base');
  }
  return claims;
}

export function challenge(status: number, error: string, description: string): FhirError {
  return new FhirError(status, status === 401 ? 'login' : 'invalid', description, {
    'www-authenticate': `${REALM}, error="${error}", error_description="${description}"`,
  });
}

/** J50: over the client's rate limit. */
export function throttled(retryAfterSeconds: number): FhirError {
  return new FhirError(429, 'throttled', 'rate limit exceeded; retry after the Retry-After delay', {
    'retry-after': String(retryAfterSeconds),
  });
}

/** RFC 6750 §3.1 / X1: a valid token without the needed scope → 403 insufficient_scope. */
export function insufficientScope(description: string): FhirError {
  return new FhirError(403, 'forbidden', description, {
    'www-authenticate': `${REALM}, error="insufficient_scope", error_description="${description}"`,
  });
}
