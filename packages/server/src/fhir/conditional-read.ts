import type { IncomingHttpHeaders } from 'node:http';

/**
 * Conditional read (R4 http.html#cread, RFC 9110 §13.1.2–13.1.3): whether a client that sent `If-None-Match` or
 * `If-Modified-Since` already holds the current version, so that the read answers 304 without a body.
 * `If-None-Match` compares weakly (a GET may), and when it is present `If-Modified-Since` is not looked at.
 * The caller has already been allowed to read the resource: a 304 says as much as a 200 would.
 */
export function notModified(headers: IncomingHttpHeaders, current: { version: number; lastUpdated: string }): boolean {
  const ifNoneMatch = headers['if-none-match'];
  if (ifNoneMatch !== undefined) {
    return ifNoneMatch
      .split(',')
      .map((tag) => tag.trim())
      .some((tag) => tag === '*' || tag.replace(/^W\//, '') === `"${current.version}"`);
  }
  const since = headers['if-modified-since'];
  if (since === undefined) return false;
  const date = Date.parse(since);
  // An unparsable date is ignored, as RFC 9110 says; HTTP dates have whole seconds, lastUpdated has milliseconds.
  if (Number.isNaN(date)) return false;
  return Math.floor(Date.parse(current.lastUpdated) / 1000) * 1000 <= date;
}
