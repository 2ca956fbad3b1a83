import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { smartConfiguration } from '../auth/smart-configuration.ts';
import { PARTITION_RE } from '../vault/partitions.ts';
import { vaultNotFound } from './errors.ts';

const EXPOSED = 'Location, Content-Location, ETag, Last-Modified, WWW-Authenticate, X-Request-Id, X-Correlation-Id';
const ALLOWED_HEADERS =
  'Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, If-None-Exist, If-Modified-Since, X-Request-Id, X-Correlation-Id';

/**
 * CORS for browser apps (A16, N04): any origin may call, because every answer depends on a Bearer token
 * sent explicitly, never on cookies (so no credentials mode and no cross-site request forgery).
 */
export function allowBrowserApps(req: FastifyRequest, reply: FastifyReply): void {
  const origin = req.headers.origin;
  if (!origin) return;
  void reply
    .header('access-control-allow-origin', origin)
    .header('vary', 'Origin')
    .header('access-control-expose-headers', EXPOSED);
  if (req.method === 'OPTIONS') {
    void reply
      .header('access-control-allow-methods', 'GET, HEAD, POST, PUT, PATCH, DELETE')
      .header('access-control-allow-headers', ALLOWED_HEADERS)
      .header('access-control-max-age', '600');
  }
}

/** What browser apps need before they hold a token: CORS preflights and `.well-known/smart-configuration`. */
export function appDiscovery(app: FastifyInstance, issuer: string): void {
  // CORS preflight of browser apps (SMART App Launch: FHIR calls with an Authorization header).
  app.options('/*', async (_req, reply) => reply.code(204).send());
  // A11: JSON whatever the Accept header says; the same document for every vault, so it reveals none.
  const send = (reply: FastifyReply) =>
    reply.type('application/json').header('cache-control', 'public, max-age=300').send(smartConfiguration(issuer));
  app.get('/.well-known/smart-configuration', async (_req, reply) => send(reply));
  app.get<{ Params: { partition: string } }>('/:partition/.well-known/smart-configuration', async (req, reply) => {
    if (!PARTITION_RE.test(req.params.partition)) throw vaultNotFound();
    return send(reply);
  });
}
