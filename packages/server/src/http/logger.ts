import type { FastifyServerOptions } from 'fastify';

/** Query parameters whose values must never reach a log line. */
const SECRET_PARAMS =
  /([?&](?:access_token|refresh_token|id_token|token|code|client_secret|client_assertion|assertion|password|code_verifier)=)[^&]*/gi;

/** Under /fhir and /audit `code` is a search parameter (`Observation?code=…`), not an OAuth authorization code. */
const SECRET_PARAMS_FHIR =
  /([?&](?:access_token|refresh_token|id_token|token|client_secret|client_assertion|assertion|password|code_verifier)=)[^&]*/gi;

export function redactUrl(url: string): string {
  const pattern = /^\/(fhir|audit)\//.test(url) ? SECRET_PARAMS_FHIR : SECRET_PARAMS;
  return url.replace(pattern, '$1[redacted]');
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
