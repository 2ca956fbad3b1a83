/**
 * Which error language a path speaks, so that errors raised before any route runs (rate limits, size
 * limits, malformed requests) still answer like the endpoint: OperationOutcome under /fhir, /audit and PIXm
 * (J50), the CARA AIM API's own JSON, RFC 6749 JSON everywhere else.
 */
export type Dialect = 'fhir' | 'cara' | 'oauth';

export function dialectOf(url: string): Dialect {
  if (/^\/(fhir|audit)(\/|$|\?)|^\/aim\/Patient/.test(url)) return 'fhir';
  if (url.startsWith('/aim/api/')) return 'cara';
  return 'oauth';
}

/** OperationOutcome issue code → OAuth error code for the same condition. */
const OAUTH_CODES: Record<string, string> = {
  throttled: 'temporarily_unavailable',
  transient: 'temporarily_unavailable',
  exception: 'server_error',
};

export function errorBody(
  dialect: Dialect,
  code: 'throttled' | 'transient' | 'too-costly' | 'structure' | 'exception',
  message: string,
): { contentType: string; body: Record<string, unknown> } {
  if (dialect === 'fhir') {
    return {
      contentType: 'application/fhir+json; charset=utf-8',
      body: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics: message }] },
    };
  }
  if (dialect === 'cara') return { contentType: 'application/json', body: { error: code, message } };
  return {
    contentType: 'application/json',
    body: { error: OAUTH_CODES[code] ?? 'invalid_request', error_description: message },
  };
}
