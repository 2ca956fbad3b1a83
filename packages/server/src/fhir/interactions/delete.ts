import type { ResourceTransaction } from '../../store/types.ts';
import type { FhirContext } from '../context.ts';
import { resourceNotFound } from '../errors.ts';
import { nextTimestamp } from '../resource-body.ts';
import { transact } from '../transact.ts';
import { versionMismatch } from './update.ts';

/**
 * Records a deletion inside an open transaction; false when it was already deleted. With `expected` (If-Match)
 * the current version must be that one, as for an update: a deleted resource has none.
 */
export async function removeIn(tx: ResourceTransaction, type: string, id: string, expected?: number): Promise<boolean> {
  const current = await tx.current(type, id);
  if (!current) throw resourceNotFound(type, id);
  if (expected !== undefined && (current.content === undefined || current.version !== expected)) {
    throw versionMismatch(`${type}/${id}`, expected);
  }
  if (current.content === undefined) return false;
  await tx.write({
    type,
    id,
    version: current.version + 1,
    lastUpdated: nextTimestamp(tx.now(), current.lastUpdated),
    method: 'DELETE',
    content: undefined,
  });
  return true;
}

/**
 * delete (http.html#delete): records a deletion version (history keeps the past versions). Deleting an
 * already deleted resource succeeds again; one that never existed here is 404. `If-Match` is honoured (412).
 */
export async function remove(ctx: FhirContext, type: string, id: string, expected?: number): Promise<void> {
  await transact(ctx, (tx) => removeIn(tx, type, id, expected));
}
