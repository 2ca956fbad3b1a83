import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * CSRF token of one interaction: an HMAC of its uid under the cookie key. A page from another site cannot
 * compute it, and it is worthless for any other interaction.
 */
export function csrfToken(key: string, uid: string): string {
  return createHmac('sha256', key).update(`csrf:${uid}`).digest('base64url');
}

export function csrfMatches(key: string, uid: string, presented: unknown): boolean {
  if (typeof presented !== 'string') return false;
  const a = Buffer.from(csrfToken(key, uid));
  const b = Buffer.from(presented);
  return a.length === b.length && timingSafeEqual(a, b);
}
