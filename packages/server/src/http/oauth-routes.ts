import type { FastifyInstance } from 'fastify';
import type { AuthServer } from '../auth/index.ts';

/**
 * Hands /oauth/* and the discovery documents to the engine. Bodies are left unread here (the engine
 * parses and size-limits its own form posts), so this plugin replaces fastify's parsers with a no-op.
 */
export async function oauthRoutes(app: FastifyInstance, opts: { auth: AuthServer }): Promise<void> {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  const forward = async (req: import('fastify').FastifyRequest, reply: import('fastify').FastifyReply) => {
    reply.hijack();
    opts.auth.handle(req.raw, reply.raw);
  };
  app.all('/oauth/*', forward);
  app.get('/.well-known/openid-configuration', forward);
  app.get('/.well-known/oauth-authorization-server', forward);
}
