import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuthServer } from '../auth/index.ts';
import { SMART_STYLE } from '../auth/smart-configuration.ts';
import { REGISTRATION_PATH } from '../auth/trust/udap-registration.ts';
import { rememberClientAddress } from './trusted-proxies.ts';

/**
 * SMART apps never send `prompt`, and the engine drops `offline_access` without prompt=consent (an OIDC
 * rule, deps.md §1). Every authorization here ends in our consent page anyway, so asking for it is exact.
 */
function withConsentPrompt(query: URLSearchParams): URLSearchParams {
  const scope = query.get('scope') ?? '';
  if (!scope.split(' ').includes('offline_access')) return query;
  const prompt = (query.get('prompt') ?? '').split(' ').filter(Boolean);
  if (prompt.includes('none') || prompt.includes('consent')) return query;
  query.set('prompt', [...prompt, 'consent'].join(' '));
  return query;
}

/** The Keycloak realm name the token URL alias answers for. */
export const KEYCLOAK_REALM = 'cara';

/**
 * Hands /oauth/* and the discovery documents to the engine. Bodies are left unread here (the engine
 * parses and size-limits its own form posts), so this plugin replaces fastify's parsers with a no-op —
 * except for authorization requests, which are normalized first (see above).
 */
export async function oauthRoutes(app: FastifyInstance, opts: { auth: AuthServer }): Promise<void> {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  const forward = async (req: FastifyRequest, reply: FastifyReply) => {
    reply.hijack();
    rememberClientAddress(req.raw, req.ip);
    opts.auth.handle(req.raw, reply.raw);
  };
  app.all('/oauth/*', forward);
  // Seed 000 / CARA: clients written for Keycloak post to /realms/<realm>/protocol/openid-connect/token. The
  // default realm `cara` is this server; the request is the engine's token request under another name.
  app.post(`/realms/${KEYCLOAK_REALM}/protocol/openid-connect/token`, (req, reply) => {
    req.raw.url = '/oauth/token';
    return forward(req, reply);
  });
  app.get('/.well-known/openid-configuration', forward);
  app.get('/.well-known/oauth-authorization-server', forward);
  app.get('/oauth/smart-style.json', async (_req, reply) =>
    reply.header('access-control-allow-origin', '*').header('cache-control', 'public, max-age=3600').send(SMART_STYLE),
  );

  await app.register(async (registration) => {
    registration.addContentTypeParser(
      'application/json',
      { parseAs: 'string', bodyLimit: 128 * 1024 },
      (_req, body, done) => {
        try {
          done(null, JSON.parse(body as string));
        } catch {
          done(null, Symbol.for('unparsable'));
        }
      },
    );
    // Any other body is answered by the registration rules (RFC 7591 errors), not by a generic 415.
    registration.addContentTypeParser('*', { parseAs: 'string', bodyLimit: 128 * 1024 }, (_req, _body, done) =>
      done(null, undefined),
    );
    registration.post(REGISTRATION_PATH, async (req, reply) => {
      rememberClientAddress(req.raw, req.ip);
      const answer = await opts.auth.register(req.body, req.raw);
      return reply.code(answer.status).header('cache-control', 'no-store').send(answer.body);
    });
  });

  await app.register(async (authorize) => {
    authorize.addContentTypeParser(
      'application/x-www-form-urlencoded',
      { parseAs: 'string', bodyLimit: 64 * 1024 },
      (_req, body, done) => done(null, body),
    );
    const rewrite = (req: FastifyRequest, reply: FastifyReply, query: URLSearchParams) => {
      req.raw.url = `${req.url.split('?')[0]}?${withConsentPrompt(query)}`;
      // authorize-post (B02): the same parameters as a GET, handed to the engine as one.
      req.raw.method = 'GET';
      return forward(req, reply);
    };
    authorize.get('/oauth/authorize', (req, reply) =>
      rewrite(req, reply, new URLSearchParams(req.url.split('?')[1] ?? '')),
    );
    authorize.post('/oauth/authorize', (req, reply) =>
      rewrite(req, reply, new URLSearchParams(typeof req.body === 'string' ? req.body : '')),
    );
  });
}
