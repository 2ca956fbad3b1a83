import type { CurrentVersion, StoredVersion } from '../../store/types.ts';
import type { FhirContext } from '../context.ts';
import { FhirError, resourceNotFound } from '../errors.ts';

/** read (http.html#read): the current version; 410 once deleted, 404 if it never existed here. */
export async function read(ctx: FhirContext, type: string, id: string): Promise<CurrentVersion> {
  const current = await ctx.store.resources.current(ctx.partition, type, id);
  if (!current) throw resourceNotFound(type, id);
  if (current.content === undefined) throw new FhirError(410, 'deleted', `Resource ${type}/${id} has been deleted`);
  return current;
}

/** vread (http.html#vread): one version; 410 for the version that recorded a deletion. */
export async function vread(ctx: FhirContext, type: string, id: string, versionId: string): Promise<StoredVersion> {
  const version = /^[1-9][0-9]{0,9}$/.test(versionId) ? Number(versionId) : undefined;
  const found = version ? await ctx.store.resources.version(ctx.partition, type, id, version) : undefined;
  if (!found) throw new FhirError(404, 'not-found', `Version ${versionId} of ${type}/${id} not found`);
  if (found.content === undefined)
    throw new FhirError(410, 'deleted', `Version ${versionId} of ${type}/${id} is a deletion`);
  return found;
}
