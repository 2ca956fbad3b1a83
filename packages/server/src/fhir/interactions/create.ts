import type { ResourceTransaction, StoredVersion } from '../../store/types.ts';
import type { FhirContext } from '../context.ts';
import { assertResourceBody, nextTimestamp, type Prepared, prepare, stamp } from '../resource-body.ts';
import { newResourceId } from '../resource-id.ts';
import { transact } from '../transact.ts';
import { validate } from '../validation/validate.ts';

/** Writes version 1 of a new resource inside an open transaction. */
export async function createIn(tx: ResourceTransaction, resource: Prepared): Promise<StoredVersion> {
  const lastUpdated = nextTimestamp(tx.now(), undefined);
  const { content, index } = stamp(resource, 1, lastUpdated);
  const { type, id } = resource;
  const written: StoredVersion = { type, id, version: 1, lastUpdated, method: 'POST', content };
  await tx.write({ ...written, index });
  return written;
}

/** create (http.html#create): a new id chosen by the server; any id in the body is ignored. */
export async function create(ctx: FhirContext, type: string, body: unknown): Promise<StoredVersion> {
  const resource = assertResourceBody(body, type);
  validate(resource);
  const prepared = prepare(resource, newResourceId());
  return transact(ctx, (tx) => createIn(tx, prepared));
}
