export const escapeHtml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);

/**
 * The pages people see at the authorization server share one self-contained layout: no external assets
 * (nothing to load from elsewhere, nothing that tracks), readable from 320 px up, system fonts, visible focus.
 */
const STYLE = `
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;background:#f3f5f8}
main{max-width:30rem;margin:0 auto;padding:1.5rem 1rem}
.card{background:#fff;border:1px solid #d0d7de;border-radius:.75rem;padding:1.25rem}
h1{font-size:1.375rem;line-height:1.3;margin:0 0 .75rem}
p{margin:.5rem 0}
.brand{font-weight:600;color:#0b5cad;margin:0 0 1rem;letter-spacing:.02em}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input[type=text],input[type=password]{width:100%;font:inherit;padding:.625rem .75rem;border:1px solid #8c959f;border-radius:.5rem}
fieldset{border:1px solid #d0d7de;border-radius:.5rem;margin:1rem 0;padding:.5rem .75rem}
legend{font-weight:600;padding:0 .25rem}
.choice{display:flex;gap:.625rem;align-items:flex-start;padding:.375rem 0}
.choice input{width:1.25rem;height:1.25rem;margin:.125rem 0 0;flex:none}
.choice label{font-weight:400;margin:0}
.choice small{display:block;color:#57606a;word-break:break-all}
.actions{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1.25rem}
button{font:inherit;font-weight:600;min-height:2.75rem;padding:.5rem 1.25rem;border-radius:.5rem;border:1px solid #0b5cad;cursor:pointer;flex:1 1 8rem}
button.primary{background:#0b5cad;color:#fff}
button.secondary{background:#fff;color:#0b5cad}
:focus-visible{outline:3px solid #f5a623;outline-offset:2px}
.alert{border-left:4px solid #cf222e;background:#ffebe9;padding:.5rem .75rem;border-radius:.25rem}
.note{color:#57606a;font-size:.875rem}
.notice{border-left:4px solid #1a7f37;background:#dafbe1;padding:.5rem .75rem;border-radius:.25rem}
h2{font-size:1.125rem;margin:0 0 .5rem}
.consent{border-top:1px solid #d0d7de;padding-top:1rem;margin-top:1rem}
.consent ul{margin:.25rem 0;padding-left:1.25rem}
.consent small{display:block;color:#57606a;word-break:break-all}
`;

export function page(title: string, body: string, nonce: string, o: { lang?: string; head?: string } = {}): string {
  return `<!doctype html>
<html lang="${o.lang ?? 'en'}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer">${o.head ?? ''}<title>${escapeHtml(title)} · carevault</title>
<style nonce="${nonce}">${STYLE}</style></head>
<body><main><p class="brand">carevault</p><div class="card">${body}</div></main></body></html>`;
}

/** Content-Security-Policy for these pages: nothing but our inline style; never framed (clickjacking). */
export function contentSecurityPolicy(nonce: string): string {
  return `default-src 'none'; style-src 'nonce-${nonce}'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'`;
}
