import type { SearchParams } from './fhir-types.js';

/** Search parameters as a query string (`?a=1&a=2`), empty when there are none; a list value repeats its name. */
export function query(params: SearchParams | undefined): string {
  if (!params) return '';
  const q = new URLSearchParams();
  const pairs: [string, string | number | (string | number)[]][] =
    params instanceof URLSearchParams || Array.isArray(params) ? [...params] : Object.entries(params);
  for (const [k, v] of pairs) for (const one of Array.isArray(v) ? v : [v]) q.append(k, String(one));
  const s = q.toString();
  return s ? `?${s}` : '';
}
