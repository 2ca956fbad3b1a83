import { randomBytes } from 'node:crypto';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { contentSecurityPolicy, escapeHtml, page } from './interaction/layout.ts';

/** Readable error page for browsers, with no external assets (the engine's default pulls a web font). */
export async function renderErrorPage(
  ctx: KoaContextWithOIDC,
  out: { error: string; error_description?: string },
): Promise<void> {
  const nonce = randomBytes(12).toString('base64url');
  ctx.type = 'html';
  ctx.set('content-security-policy', contentSecurityPolicy(nonce));
  ctx.body = errorHtml(out.error, out.error_description, nonce);
}

export function errorHtml(error: string, description: string | undefined, nonce: string): string {
  return page(
    'Sign-in error',
    `<h1>Something went wrong</h1><p role="alert"><code>${escapeHtml(error)}</code></p>${
      description ? `<p>${escapeHtml(description)}</p>` : ''
    }<p class="note">Go back to the app and start again.</p>`,
    nonce,
  );
}
