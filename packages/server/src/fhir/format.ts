import { FhirError } from './errors.ts';

export const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const JSON_TYPES = new Set(['application/fhir+json', 'application/json', 'application/json+fhir', 'json', 'text/json']);

/**
 * HTTP content negotiation (FHIR http.html#mime-type): JSON only. `_format` overrides Accept; anything that
 * asks for XML, Turtle or HTML only is refused with 406.
 */
export function assertAcceptsJson(accept: string | undefined, format: unknown): void {
  if (format !== undefined) {
    if (typeof format !== 'string' || !JSON_TYPES.has(format.split(';')[0]?.trim().toLowerCase() ?? '')) {
      throw new FhirError(
        406,
        'not-supported',
        `_format ${String(format)} is not supported; this server speaks FHIR JSON`,
      );
    }
    return;
  }
  if (!accept) return;
  const ranges = accept.split(',').map((r) => r.split(';')[0]?.trim().toLowerCase() ?? '');
  const ok = ranges.some(
    (r) => JSON_TYPES.has(r) || r === '*/*' || r === 'application/*' || r === '' || r === 'application/fhir+ndjson',
  );
  if (!ok) throw new FhirError(406, 'not-supported', `cannot produce ${accept}; this server speaks FHIR JSON`);
}

/** Request bodies must be FHIR JSON (415 otherwise); JSON Patch is accepted where the caller allows it. */
export function bodyMediaType(contentType: string | undefined): 'json' | 'json-patch' | undefined {
  const type = contentType?.split(';')[0]?.trim().toLowerCase();
  if (!type) return undefined;
  if (type === 'application/fhir+json' || type === 'application/json' || type === 'application/json+fhir')
    return 'json';
  if (type === 'application/json-patch+json') return 'json-patch';
  return undefined;
}
