import { createRequire } from 'node:module';
import type { ResourceTransaction, StoredVersion } from '../../store/types.ts';
import { conditionalMatches } from '../conditional.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { assertResourceBody, prepare } from '../resource-body.ts';
import { transact } from '../transact.ts';
import { validate } from '../validation/validate.ts';
import { parseEtag, updateIn } from './update.ts';

const require = createRequire(import.meta.url);
const jsonPatch = require('fast-json-patch') as {
  applyPatch(doc: unknown, patch: unknown[], validate?: boolean, mutate?: boolean): { newDocument: unknown };
  JsonPatchError: new (...args: unknown[]) => Error & { name: string; index?: number };
};

/**
 * patch (http.html#patch) with JSON Patch (RFC 6902, fast-json-patch): applied to the current version,
 * then validated like an update. It may not change resourceType or id; If-Match works as for update.
 */
export async function patch(
  ctx: FhirContext,
  type: string,
  id: string,
  operations: unknown,
  ifMatch: string | undefined,
): Promise<StoredVersion> {
  const ops = operationsOf(operations);
  const expected = ifMatch === undefined ? undefined : parseEtag(ifMatch);
  return transact(ctx, (tx) => patchIn(tx, type, id, ops, expected));
}

/**
 * Conditional patch, `PATCH [type]?[search]` (http.html#patch): the one match of the condition, found inside the
 * write's transaction so that a resource created meanwhile is counted; none is 404, several are 412.
 */
export async function conditionalPatch(
  ctx: FhirContext,
  type: string,
  query: string,
  operations: unknown,
  ifMatch: string | undefined,
): Promise<StoredVersion> {
  const ops = operationsOf(operations);
  const expected = ifMatch === undefined ? undefined : parseEtag(ifMatch);
  return transact(ctx, async (tx) => {
    const ids = await conditionalMatches(ctx, type, query, (q) => tx.search(q));
    if (ids.length > 1)
      throw new FhirError(412, 'conflict', `the condition ${type}?${query} matches more than one resource`);
    if (!ids[0]) throw new FhirError(404, 'not-found', `no ${type} matches the condition ${type}?${query}`);
    return patchIn(tx, type, ids[0], ops, expected);
  });
}

function operationsOf(operations: unknown): unknown[] {
  if (!Array.isArray(operations))
    throw new FhirError(400, 'structure', 'a JSON Patch document is an array of operations');
  return operations;
}

/** Patches the current version of `type/id` inside an open transaction (also a Bundle's PATCH entry). */
export async function patchIn(
  tx: ResourceTransaction,
  type: string,
  id: string,
  operations: unknown[],
  expected: number | undefined,
): Promise<StoredVersion> {
  const current = await tx.current(type, id);
  if (!current) throw new FhirError(404, 'not-found', `Resource ${type}/${id} not found`);
  if (current.content === undefined) throw new FhirError(410, 'deleted', `Resource ${type}/${id} has been deleted`);
  // A precondition is judged before the method runs (RFC 9110 §13.2.2), whatever the patch would make.
  if (expected !== undefined && current.version !== expected)
    throw new FhirError(
      412,
      'conflict',
      `If-Match W/"${expected}" does not match the current version of ${type}/${id}`,
    );
  let patched: unknown;
  try {
    patched = jsonPatch.applyPatch(JSON.parse(current.content), operations, true, false).newDocument;
  } catch (err) {
    const e = err as { name?: string; message?: string; index?: number };
    if (e.name === 'TEST_OPERATION_FAILED')
      throw new FhirError(422, 'conflict', `JSON Patch test operation ${e.index ?? ''} failed`);
    throw new FhirError(400, 'invalid', `invalid JSON Patch: ${(e.message ?? 'error').split('\n')[0]}`);
  }
  const resource = assertResourceBody(patched, type);
  if (resource.id !== id)
    throw new FhirError(422, 'invalid', 'a patch may not change the resource id', {}, [`${type}.id`]);
  validate(resource);
  const { version } = await updateIn(tx, prepare(resource, id), expected, 'PATCH');
  return version;
}
