import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { contentSecurityPolicy } from './layout.ts';

/** The pages' plugin takes HTML forms only (16 KiB); any other body reads as an empty form. */
export function acceptForms(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'string', bodyLimit: 16 * 1024 },
    (_req, body, done) => done(null, new URLSearchParams(body as string)),
  );
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, new URLSearchParams()));
}

/** The posted form (repeated fields such as `scope` kept); empty for anything that was not a form. */
export function formOf(req: FastifyRequest): URLSearchParams {
  return req.body instanceof URLSearchParams ? req.body : new URLSearchParams();
}

/** A page of ours: its own CSP nonce, never cached, never framed. */
export function sendPage(reply: FastifyReply, status: number, html: (nonce: string) => string) {
  const nonce = randomBytes(12).toString('base64url');
  return reply
    .code(status)
    .header('content-security-policy', contentSecurityPolicy(nonce))
    .header('cache-control', 'no-store')
    .header('x-frame-options', 'DENY')
    .type('text/html; charset=utf-8')
    .send(html(nonce));
}
