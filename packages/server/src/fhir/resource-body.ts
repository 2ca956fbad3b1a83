import type { IndexRows } from '../store/types.ts';
import { FhirError } from './errors.ts';
import { ID_RE } from './resource-types.ts';
import { extractIndex } from './search/extract.ts';

/**
 * The shape every written resource must have before anything else is looked at: a JSON object whose
 * resourceType is the URL's type, a valid id, an object meta (400 otherwise). Structural validation
 * (422) follows with `validate` once the id rules of the interaction are checked.
 */
export function assertResourceBody(body: unknown, type: string): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new FhirError(400, 'structure', 'the request body must be a FHIR resource (a JSON object)');
  }
  const resource = body as Record<string, unknown>;
  if (resource.resourceType !== type) {
    throw new FhirError(
      400,
      'invalid',
      `resourceType "${String(resource.resourceType)}" does not match the URL type ${type}`,
      {},
      ['resourceType'],
    );
  }
  if (resource.id !== undefined && (typeof resource.id !== 'string' || !ID_RE.test(resource.id))) {
    throw new FhirError(400, 'value', 'id must be 1-64 characters of A-Z a-z 0-9 - .', {}, [`${type}.id`]);
  }
  if (
    resource.meta !== undefined &&
    (typeof resource.meta !== 'object' || resource.meta === null || Array.isArray(resource.meta))
  ) {
    throw new FhirError(400, 'structure', 'meta must be an object', {}, [`${type}.meta`]);
  }
  return resource;
}

/**
 * The resource as stored and served (the server owns id, meta.versionId and meta.lastUpdated), serialized
 * once, with its search index rows.
 */
export function stamp(
  resource: Record<string, unknown>,
  id: string,
  version: number,
  lastUpdated: string,
): { content: string; index: IndexRows } {
  const { resourceType, id: _ignored, meta, ...rest } = resource;
  const ownMeta = { ...(meta as Record<string, unknown> | undefined), versionId: String(version), lastUpdated };
  const stamped = { resourceType, id, meta: ownMeta, ...rest };
  return { content: JSON.stringify(stamped), index: extractIndex(stamped) };
}

/** A timestamp for a new version: always later than the previous one, even within one millisecond. */
export function nextTimestamp(previous: string | undefined): string {
  const now = Date.now();
  const prev = previous ? Date.parse(previous) : 0;
  return new Date(Math.max(now, prev + 1)).toISOString();
}
