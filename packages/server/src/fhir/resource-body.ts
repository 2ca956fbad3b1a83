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

/** A resource serialized and indexed before its version is known; stamping it is then one concatenation. */
export interface Prepared {
  type: string;
  id: string;
  /** The serialized resource after meta.lastUpdated (see `head`). */
  rest: string;
  index: IndexRows;
}

/** The start of every stored resource: the server owns id, meta.versionId and meta.lastUpdated, and puts them first. */
function head(type: string, id: string, versionId: string, lastUpdated: string): string {
  return `{"resourceType":${JSON.stringify(type)},"id":${JSON.stringify(id)},"meta":{"versionId":${JSON.stringify(versionId)},"lastUpdated":${JSON.stringify(lastUpdated)}`;
}

/**
 * Everything of writing `resource` as `id` that does not depend on its version: callers do it before the
 * write lock, where it does not hold up other writers. No search parameter reads meta.versionId or
 * meta.lastUpdated (`_lastUpdated` is searched on the resource row), so the index rows are final here.
 */
export function prepare(resource: Record<string, unknown>, id: string): Prepared {
  const { resourceType, id: _ignored, meta, ...rest } = resource;
  const { versionId: _v, lastUpdated: _l, ...ownMeta } = (meta ?? {}) as Record<string, unknown>;
  const type = resourceType as string;
  const blank = { resourceType, id, meta: { versionId: '', lastUpdated: '', ...ownMeta }, ...rest };
  const text = JSON.stringify(blank);
  const start = head(type, id, '', '');
  if (!text.startsWith(start)) throw new Error(`${type}/${id} did not serialize as a resource`);
  return { type, id, rest: text.slice(start.length), index: extractIndex(blank) };
}

/** The stored version of a prepared resource: its JSON text and its search index rows. */
export function stamp(p: Prepared, version: number, lastUpdated: string): { content: string; index: IndexRows } {
  return { content: head(p.type, p.id, String(version), lastUpdated) + p.rest, index: p.index };
}

/**
 * A new version's lastUpdated, from its transaction's clock (`now`, ResourceTransaction.now): always later than
 * the previous version's, even within one millisecond.
 */
export function nextTimestamp(now: number, previous: string | undefined): string {
  const prev = previous ? Date.parse(previous) : 0;
  return new Date(Math.max(now, prev + 1)).toISOString();
}
