import type { FhirContext } from '../context.ts';
import { resourceNotFound } from '../errors.ts';
import { nextTimestamp } from '../resource-body.ts';

/**
 * delete (http.html#delete): records a deletion version (history keeps the past versions). Deleting an
 * already deleted resource succeeds again; one that never existed here is 404.
 */
export async function remove(ctx: FhirContext, type: string, id: string): Promise<void> {
  await ctx.store.resources.transaction(ctx.partition, async (tx) => {
    const current = await tx.current(type, id);
    if (!current) throw resourceNotFound(type, id);
    if (current.content === undefined) return;
    const version = current.version + 1;
    await tx.write({
      type,
      id,
      version,
      lastUpdated: nextTimestamp(current.lastUpdated),
      method: 'DELETE',
      content: undefined,
    });
  });
}
