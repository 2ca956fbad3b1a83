import { createRequire } from 'node:module';
import type { ResourceTransaction, StoredVersion } from '../../store/types.ts';
import { FHIR_BODY_LIMIT } from '../body-parsers.ts';
import { conditionalMatches } from '../conditional.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { checkFhirJson } from '../json-body.ts';
import { assertResourceBody, prepare } from '../resource-body.ts';
import { transact } from '../transact.ts';
import { validate } from '../validation/validate.ts';
import { applyFhirPathPatch, MAX_PATCH_OPERATIONS } from './fhirpath-patch.ts';
import { parseEtag, updateIn } from './update.ts';

const require = createRequire(import.meta.url);
const jsonPatch = require('fast-json-patch') as {
  applyOperation(
    doc: unknown,
    operation: unknown,
    validate: boolean,
    mutate: boolean,
    banPrototypeModifications: boolean,
    index: number,
  ): { newDocument: unknown };
  getValueByPointer(doc: unknown, pointer: string): unknown;
};

/** A patch as http.html#patch takes it: JSON Patch (RFC 6902) or FHIRPath Patch (a Parameters resource). */
export type PatchDocument = { kind: 'json'; operations: unknown[] } | { kind: 'fhirpath'; parameters: unknown };

/** The patch a body holds, by its media type: `application/json-patch+json`, or a FHIR Parameters resource. */
export function patchDocument(body: unknown, media: 'json-patch' | 'fhir'): PatchDocument {
  if (media === 'json-patch') return { kind: 'json', operations: operationsOf(body) };
  if ((body as { resourceType?: unknown } | null)?.resourceType !== 'Parameters')
    throw new FhirError(400, 'invalid', 'a FHIR-format PATCH body is a FHIRPath Patch Parameters resource');
  return { kind: 'fhirpath', parameters: body };
}

/**
 * patch (http.html#patch) with JSON Patch (RFC 6902, fast-json-patch) or FHIRPath Patch (fhirpatch.html):
 * applied to the current version, then validated like an update. It may not change resourceType or id;
 * If-Match works as for update.
 */
export async function patch(
  ctx: FhirContext,
  type: string,
  id: string,
  doc: PatchDocument,
  ifMatch: string | undefined,
): Promise<StoredVersion> {
  const expected = ifMatch === undefined ? undefined : parseEtag(ifMatch);
  return transact(ctx, (tx) => patchIn(tx, type, id, doc, expected));
}

/**
 * Conditional patch, `PATCH [type]?[search]` (http.html#patch): the one match of the condition, found inside the
 * write's transaction so that a resource created meanwhile is counted; none is 404, several are 412.
 */
export async function conditionalPatch(
  ctx: FhirContext,
  type: string,
  query: string,
  doc: PatchDocument,
  ifMatch: string | undefined,
): Promise<StoredVersion> {
  const expected = ifMatch === undefined ? undefined : parseEtag(ifMatch);
  return transact(ctx, async (tx) => {
    const ids = await conditionalMatches(ctx, type, query, (q) => tx.search(q));
    if (ids.length > 1)
      throw new FhirError(412, 'conflict', `the condition ${type}?${query} matches more than one resource`);
    if (!ids[0]) throw new FhirError(404, 'not-found', `no ${type} matches the condition ${type}?${query}`);
    return patchIn(tx, type, ids[0], doc, expected);
  });
}

function operationsOf(operations: unknown): unknown[] {
  if (!Array.isArray(operations))
    throw new FhirError(400, 'structure', 'a JSON Patch document is an array of operations');
  if (operations.length > MAX_PATCH_OPERATIONS)
    throw new FhirError(400, 'too-costly', `at most ${MAX_PATCH_OPERATIONS} operations in one patch`);
  return operations;
}

/** Patches the current version of `type/id` inside an open transaction (also a Bundle's PATCH entry). */
export async function patchIn(
  tx: ResourceTransaction,
  type: string,
  id: string,
  doc: PatchDocument,
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
  const patched = applied(current.content, doc);
  checkFhirJson(patched, 'the patched resource');
  const resource = assertResourceBody(patched, type);
  if (resource.id !== id)
    throw new FhirError(422, 'invalid', 'a patch may not change the resource id', {}, [`${type}.id`]);
  validate(resource);
  const { version } = await updateIn(tx, prepare(resource, id), expected, 'PATCH');
  return version;
}

const JSON_PATCH_OPS = new Set(['add', 'remove', 'replace', 'move', 'copy', 'test']);

function applied(content: string, doc: PatchDocument): unknown {
  if (doc.kind === 'fhirpath')
    return applyFhirPathPatch(JSON.parse(content) as Record<string, unknown>, doc.parameters);
  let document: unknown = JSON.parse(content);
  // `copy` is the one operation that grows a resource beyond what the request carried: copying a list into
  // itself doubles it, and twenty such lines would exhaust the process. What copies add is counted against
  // the size a resource may have.
  let size = content.length;
  try {
    doc.operations.forEach((op, i) => {
      const o = op as { op?: unknown; from?: unknown };
      // fast-json-patch looks the name up on an object: `__proto__` got past its own check.
      if (!JSON_PATCH_OPS.has(o?.op as string))
        throw new FhirError(
          400,
          'invalid',
          `invalid JSON Patch: operation ${i}: op must be one of ${[...JSON_PATCH_OPS].join(', ')}`,
        );
      if (o?.op === 'copy' && typeof o.from === 'string') {
        let copied: unknown;
        try {
          copied = jsonPatch.getValueByPointer(document, o.from);
        } catch {
          copied = undefined; // an unresolvable `from` is applyOperation's error to report
        }
        size += JSON.stringify(copied)?.length ?? 0;
        if (size > FHIR_BODY_LIMIT)
          throw new FhirError(
            422,
            'too-costly',
            `JSON Patch operation ${i}: the resource would exceed ${FHIR_BODY_LIMIT} bytes`,
          );
      }
      document = jsonPatch.applyOperation(document, op, true, true, true, i).newDocument;
    });
    return document;
  } catch (err) {
    if (err instanceof FhirError) throw err;
    const e = err as { name?: string; message?: string; index?: number };
    if (e.name === 'TEST_OPERATION_FAILED')
      throw new FhirError(422, 'conflict', `JSON Patch test operation ${e.index ?? ''} failed`);
    throw new FhirError(400, 'invalid', `invalid JSON Patch: ${(e.message ?? 'error').split('\n')[0]}`);
  }
}
