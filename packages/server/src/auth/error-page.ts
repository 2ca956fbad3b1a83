import type { KoaContextWithOIDC } from 'oidc-provider';

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);

/** Readable error page for browsers, with no external assets (the engine's default pulls a web font). */
export async function renderErrorPage(
  ctx: KoaContextWithOIDC,
  out: { error: string; error_description?: string },
): Promise<void> {
  ctx.type = 'html';
  ctx.body = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign-in error</title><style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}code{background:#eee;padding:0 .25rem}</style></head>
<body><main><h1>Something went wrong</h1><p><code>${escapeHtml(out.error)}</code></p>${
    out.error_description ? `<p>${escapeHtml(out.error_description)}</p>` : ''
  }</main></body></html>`;
}
