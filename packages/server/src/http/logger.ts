import type { FastifyServerOptions } from 'fastify';

/** Query parameters whose values must never reach a log line. */
const SECRET_PARAMS =
  /([?&](?:access_token|refresh_token|id_token|token|code|client_secret|client_assertion|assertion|password|code_verifier)=)[^&]*/gi;

export function redactUrl(url: string): string {
  return url.replace(SECRET_PARAMS, '$1[redacted]');
}

/** pino options: JSON lines with request id; no Authorization header, cookie or secret query value. */
export function loggerOptions(level: string): Exclude<FastifyServerOptions['logger'], boolean | undefined> {
  return {
    level,
    redact: {
      paths: ['req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]'],
      censor: '[redacted]',
    },
    serializers: {
      req(req: { id: string; method: string; url: string; socket?: { remoteAddress?: string } }) {
        return { id: req.id, method: req.method, url: redactUrl(req.url), remoteAddress: req.socket?.remoteAddress };
      },
    },
  };
}
