import { randomBytes } from 'node:crypto';
import type { FastifyReply } from 'fastify';
import { contentSecurityPolicy, escapeHtml, page } from '../auth/interaction/layout.ts';

/** Server-rendered viewer pages (Dutch first, as the users are Dutch clinicians; English below). */
function send(reply: FastifyReply, status: number, title: string, body: string, head = ''): FastifyReply {
  const nonce = randomBytes(12).toString('base64url');
  return reply
    .code(status)
    .header('content-security-policy', contentSecurityPolicy(nonce))
    .header('cache-control', 'no-store')
    .type('text/html; charset=utf-8')
    .send(page(title, body, nonce, { lang: 'nl', head }));
}

/** A refused launch: which check failed, never internals. */
export function launchRefusedPage(reply: FastifyReply, reason: string): FastifyReply {
  return send(
    reply,
    403,
    'Zorgviewer',
    `<h1>De Zorgviewer kon niet worden geopend</h1><p class="alert" role="alert" id="reason">${escapeHtml(reason)}</p>
<p class="note">The Zorgviewer could not be opened. Start it again from your EHR; if this keeps happening, contact your
application administrator with the time of this message.</p>`,
  );
}

/**
 * After a launch: the session cookie is SameSite=Strict, so it would not travel on a redirect that follows the
 * IdP's cross-site POST. This page, on the viewer's own origin, moves on to the viewer as a same-site navigation.
 */
export function launchedPage(reply: FastifyReply, cookie: string): FastifyReply {
  void reply.header('set-cookie', cookie);
  return send(
    reply,
    200,
    'Zorgviewer',
    '<h1>Zorgviewer</h1><p><a href="/viewer/" id="continue">Doorgaan naar de Zorgviewer</a> · <span lang="en">Continue</span></p>',
    '<meta http-equiv="refresh" content="0;url=/viewer/">',
  );
}

export function noSessionPage(reply: FastifyReply): FastifyReply {
  return send(
    reply,
    401,
    'Zorgviewer',
    `<h1>Geen sessie</h1><p>Open de Zorgviewer vanuit uw EPD.</p><p class="note" lang="en">No session: open the
Zorgviewer from your EHR.</p>`,
  );
}

export function signedOutPage(reply: FastifyReply, cookie: string): FastifyReply {
  void reply.header('set-cookie', cookie);
  return send(
    reply,
    200,
    'Zorgviewer',
    '<h1>U bent afgemeld</h1><p class="note" lang="en">You are signed out of the Zorgviewer.</p>',
  );
}
