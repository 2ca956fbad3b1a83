import type { ResourceTransaction, StoredVersion } from '../../store/types.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { assertResourceBody, nextTimestamp, type Prepared, prepare, stamp } from '../resource-body.ts';
import { transact } from '../transact.ts';
import { validate } from '../validation/validate.ts';

/** Parses `W/"3"` (or `"3"`) into 3; anything else is a bad precondition. */
export function parseEtag(ifMatch: string): number {
  const m = /^(?:W\/)?"([1-9][0-9]{0,9})"$/.exec(ifMatch.trim());
  if (!m) throw new FhirError(400, 'value', `If-Match "${ifMatch}" is not a version ETag such as W/"3"`);
  return Number(m[1]);
}

/** If-Match names a version that is not the current one of a resource that exists (http.html#concurrency). */
export function versionMismatch(target: string, expected: number): FhirError {
  return new FhirError(412, 'conflict', `If-Match W/"${expected}" does not match the current version of ${target}`);
}

/**
 * Writes the next version of `type/id` inside an open transaction; `expected` is the If-Match version.
 * Returns whether it created the resource (update-as-create).
 */
export async function updateIn(
  tx: ResourceTransaction,
  resource: Prepared,
  expected: number | undefined,
  method: 'PUT' | 'PATCH' = 'PUT',
): Promise<{ version: StoredVersion; created: boolean }> {
  const { type, id } = resource;
  const current = await tx.current(type, id);
  if (expected !== undefined && (current?.content === undefined || current.version !== expected)) {
    throw versionMismatch(`${type}/${id}`, expected);
  }
  const version = (current?.version ?? 0) + 1;
  const lastUpdated = nextTimestamp(tx.now(), current?.lastUpdated);
  const { content, index } = stamp(resource, version, lastUpdated);
  const written: StoredVersion = { type, id, version, lastUpdated, method, content };
  await tx.write({ ...written, index });
  return { version: written, created: current?.content === undefined };
}

/** The id rules of an update body (J17): present and equal to the URL id. */
export function assertUpdateBody(body: unknown, type: string, id: string): Record<string, unknown> {
  const resource = assertResourceBody(body, type);
  if (resource.id === undefined)
    throw new FhirError(400, 'required', 'the resource must carry its id for an update', {}, [`${type}.id`]);
  if (resource.id !== id)
    throw new FhirError(400, 'invalid', `resource id "${String(resource.id)}" does not match the URL id "${id}"`, {}, [
      `${type}.id`,
    ]);
  validate(resource);
  return resource;
}

/**
 * update (http.html#update) with update-as-create (#upsert): the client chooses the id (seed 000 PUTs
 * Observation/<uuid>). `If-Match` must name the current version (412 otherwise).
 */
export async function update(
  ctx: FhirContext,
  type: string,
  id: string,
  body: unknown,
  ifMatch: string | undefined,
): Promise<{ version: StoredVersion; created: boolean }> {
  const resource = assertUpdateBody(body, type, id);
  const expected = ifMatch === undefined ? undefined : parseEtag(ifMatch);
  const prepared = prepare(resource, id);
  return transact(ctx, (tx) => updateIn(tx, prepared, expected));
}
