import { randomUUID } from 'node:crypto';
import type { StoredVersion } from '../../store/types.ts';
import type { FhirContext } from '../context.ts';
import { assertResourceBody, nextTimestamp, stamp } from '../resource-body.ts';

/** create (http.html#create): a new id chosen by the server; any id in the body is ignored. */
export async function create(ctx: FhirContext, type: string, body: unknown): Promise<StoredVersion> {
  const resource = assertResourceBody(body, type);
  const id = randomUUID();
  const lastUpdated = nextTimestamp(undefined);
  const { content, index } = stamp(resource, id, 1, lastUpdated);
  const written: StoredVersion = { type, id, version: 1, lastUpdated, method: 'POST', content };
  await ctx.store.resources.transaction(ctx.partition, async (tx) => {
    await tx.write({ ...written, index });
  });
  return written;
}
