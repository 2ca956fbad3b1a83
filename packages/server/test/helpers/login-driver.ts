import type { Agent } from 'undici';
import { fetch } from 'undici';

/**
 * Walks the authorization server's login and consent pages the way a browser does — cookies, redirects,
 * real forms with their CSRF field — for tests that need many authorization codes. The browser tests do
 * the same in Chromium.
 */
export interface Person {
  username: string;
  password: string;
  /** Scopes to untick on the consent page. */
  untick?: string[];
  /** Patient choice value (partition/id) to pick; default the first offered. */
  patient?: string;
  decision?: 'allow' | 'deny';
}

export interface PageStop {
  status: number;
  html: string;
  url: string;
}

export class LoginDriver {
  private readonly cookies = new Map<string, string>();
  constructor(
    private readonly origin: string,
    private readonly agent: Agent,
  ) {}

  async request(url: string, init: { method?: string; body?: string } = {}) {
    const res = await fetch(url, {
      method: init.method ?? 'GET',
      redirect: 'manual',
      dispatcher: this.agent,
      headers: {
        cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '),
        ...(init.body !== undefined ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      },
      body: init.body,
    });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const eq = (pair as string).indexOf('=');
      const name = (pair as string).slice(0, eq);
      const value = (pair as string).slice(eq + 1);
      if (/expires=Thu, 01 Jan 1970/i.test(c) || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return res;
  }

  /** Follows redirects on our origin; returns the first redirect elsewhere (the app's redirect_uri) or a page. */
  async follow(url: string, init: { method?: string; body?: string } = {}): Promise<URL | PageStop> {
    let res = await this.request(url, init);
    let current = url;
    for (let i = 0; i < 10; i++) {
      const location = res.headers.get('location');
      if (res.status < 300 || res.status >= 400 || !location) {
        return { status: res.status, html: await res.text(), url: current };
      }
      await res.arrayBuffer();
      const next = new URL(location, current);
      if (next.origin !== this.origin) return next;
      current = next.href;
      res = await this.request(current);
    }
    throw new Error('too many redirects');
  }

  /** The whole dance: authorize URL → login page → consent page → the app's redirect URI. */
  async authorize(authorizeUrl: string, person: Person): Promise<URL | PageStop> {
    let stop = await this.follow(authorizeUrl);
    for (let step = 0; step < 4 && !(stop instanceof URL); step++) {
      const form = formOf(stop.html);
      if (!form) return stop;
      const body = new URLSearchParams({ csrf: form.csrf });
      if (form.action.endsWith('/login')) {
        body.set('username', person.username);
        body.set('password', person.password);
      } else if (form.action.endsWith('/consent')) {
        for (const s of form.scopes) if (!person.untick?.includes(s)) body.append('scope', s);
        const patient = person.patient ?? form.patients[0];
        if (patient) body.set('patient', patient);
        body.set('decision', person.decision ?? 'allow');
      } else {
        return stop;
      }
      stop = await this.follow(new URL(form.action, this.origin).href, { method: 'POST', body: body.toString() });
    }
    return stop;
  }
}

export interface ParsedForm {
  action: string;
  csrf: string;
  scopes: string[];
  patients: string[];
}

const decodeEntities = (s: string) =>
  s
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');

export function formOf(html: string): ParsedForm | undefined {
  const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1];
  const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1];
  if (!action || !csrf) return undefined;
  const values = (name: string) =>
    [...html.matchAll(new RegExp(`name="${name}" value="([^"]+)"`, 'g'))].map((m) => decodeEntities(m[1] as string));
  return { action: decodeEntities(action), csrf, scopes: values('scope'), patients: values('patient') };
}

/** An authorization request of the public test app `viewer` (PKCE S256 with a fixed challenge) at `base`. */
export function viewerAuthorizeUrl(base: string, fhirBase: string): string {
  return `${base}/oauth/authorize?${new URLSearchParams({
    response_type: 'code',
    client_id: 'viewer',
    redirect_uri: 'https://viewer.example/cb',
    scope: 'openid fhirUser user/*.rs',
    state: crypto.randomUUID(),
    code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    code_challenge_method: 'S256',
    aud: fhirBase,
  })}`;
}
