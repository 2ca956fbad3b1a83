import { FhirError } from './errors.ts';

export const FHIR_JSON = 'application/fhir+json; charset=utf-8';
export const FHIR_XML = 'application/fhir+xml; charset=utf-8';
export type FhirFormat = 'json' | 'xml';

const JSON_TYPES = new Set(['application/fhir+json', 'application/json', 'application/json+fhir', 'json', 'text/json']);
const XML_TYPES = new Set(['application/fhir+xml', 'application/xml', 'application/xml+fhir', 'text/xml', 'xml']);
const SUPPORTED = 'application/fhir+json or application/fhir+xml';

function formatOf(type: string): FhirFormat | undefined {
  if (JSON_TYPES.has(type)) return 'json';
  if (XML_TYPES.has(type)) return 'xml';
  return undefined;
}

/**
 * HTTP content negotiation (FHIR http.html#mime-type): JSON or XML. `_format` overrides Accept; no Accept,
 * a wildcard or a tie is JSON; a request that accepts neither is refused with 406 naming what is supported.
 */
export function negotiateFormat(accept: string | undefined, format: unknown): FhirFormat {
  if (format !== undefined) {
    const chosen = typeof format === 'string' ? formatOf(format.split(';')[0]?.trim().toLowerCase() ?? '') : undefined;
    if (!chosen)
      throw new FhirError(406, 'not-supported', `_format ${String(format)} is not supported; use json or xml`);
    return chosen;
  }
  if (!accept) return 'json';
  let best: { format: FhirFormat; q: number } | undefined;
  for (const range of accept.split(',')) {
    const [type = '', ...params] = range.split(';').map((s) => s.trim().toLowerCase());
    const qParam = params.find((p) => p.startsWith('q='));
    const q = qParam ? Number(qParam.slice(2)) : 1;
    if (!(q > 0)) continue;
    const candidate =
      type === '' || type === '*/*' || type === 'application/*' || type === 'application/fhir+ndjson'
        ? 'json'
        : formatOf(type);
    if (candidate && (!best || q > best.q)) best = { format: candidate, q };
  }
  if (!best) throw new FhirError(406, 'not-supported', `cannot produce ${accept}; this server speaks ${SUPPORTED}`);
  return best.format;
}

/** For endpoints that only ever answer JSON (the audit API): 406 for anything else. */
export function assertAcceptsJson(accept: string | undefined, format: unknown): void {
  if (negotiateFormat(accept, format) !== 'json')
    throw new FhirError(406, 'not-supported', 'this endpoint answers application/fhir+json only');
}

/** Request bodies: FHIR JSON or FHIR XML (415 otherwise); JSON Patch where the caller allows it. */
export function bodyMediaType(contentType: string | undefined): 'json' | 'xml' | 'json-patch' | undefined {
  const type = contentType?.split(';')[0]?.trim().toLowerCase();
  if (!type) return undefined;
  if (type === 'application/fhir+json' || type === 'application/json' || type === 'application/json+fhir')
    return 'json';
  if (type === 'application/fhir+xml' || type === 'application/xml' || type === 'application/xml+fhir') return 'xml';
  if (type === 'application/json-patch+json') return 'json-patch';
  return undefined;
}
