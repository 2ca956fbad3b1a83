import type { StoredVersion } from '../../store/types.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { assertResourceBody, nextTimestamp, stamp } from '../resource-body.ts';

/** Parses `W/"3"` (or `"3"`) into 3; anything else is a bad precondition. */
function parseEtag(ifMatch: string): number {
  const m = /^(?:W\/)?"([1-9][0-9]{0,9})"$/.exec(ifMatch.trim());
  if (!m) throw new FhirError(400, 'value', `If-Match "${ifMatch}" is not a version ETag such as W/"3"`);
  return Number(m[1]);
}

/**
 * update (http.html#update) with update-as-create (#upsert): the client chooses the id (seed 000 PUTs
 * Observation/<uuid>). `If-Match` must name the current version (412 otherwise). Returns whether it created.
 */
export async function update(
  ctx: FhirContext,
  type: string,
  id: string,
  body: unknown,
  ifMatch: string | undefined,
): Promise<{ version: StoredVersion; created: boolean }> {
  const resource = assertResourceBody(body, type);
  if (resource.id === undefined)
    throw new FhirError(400, 'required', 'the resource must carry its id for an update', {}, [`${type}.id`]);
  if (resource.id !== id)
    throw new FhirError(400, 'invalid', `resource id "${String(resource.id)}" does not match the URL id "${id}"`, {}, [
      `${type}.id`,
    ]);
  const expected = ifMatch === undefined ? undefined : parseEtag(ifMatch);
  return ctx.store.resources.transaction(ctx.partition, async (tx) => {
    const current = await tx.current(type, id);
    if (expected !== undefined && (current?.content === undefined || current.version !== expected)) {
      throw new FhirError(
        412,
        'conflict',
        `If-Match W/"${expected}" does not match the current version of ${type}/${id}`,
      );
    }
    const version = (current?.version ?? 0) + 1;
    const lastUpdated = nextTimestamp(current?.lastUpdated);
    const { content, index } = stamp(resource, id, version, lastUpdated);
    const written: StoredVersion = { type, id, version, lastUpdated, method: 'PUT', content };
    await tx.write({ ...written, index });
    return { version: written, created: current?.content === undefined };
  });
}
