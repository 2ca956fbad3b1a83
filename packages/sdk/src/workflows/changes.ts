import { CarevaultError } from '../errors.js';
import type { FhirClient, RequestOptions } from '../fhir-client.js';
import type { BundleEntry, Resource } from '../fhir-types.js';

/** A resource changed since an instant, in its newest state: its current version, or its deletion. */
export interface Change<T extends Resource = Resource> {
  type: string;
  id: string;
  /** The version id, when the server says it (carevault always does). */
  version?: string;
  /** When this version was written, when the server says it: resume from the newest (see changesSince). */
  lastUpdated?: string;
  /** The resource as it is now; absent when its newest version is a deletion. */
  resource?: T;
  deleted: boolean;
}

export interface ChangesOptions extends RequestOptions {
  /** Only these types, each through its own `[type]/_history` (default: the whole base's `_history`). */
  types?: string[];
  /** Versions per history page (default 100). */
  count?: number;
}

/**
 * What changed at a FHIR base since `since` (http.html#history, `_since`): each created, updated or deleted
 * resource once, in its newest state, deletions included — what a copy kept up to date needs. History pages go
 * back in time, so the first version met of a resource is its newest.
 *
 * To continue later, pass the newest `lastUpdated` among the changes as the next `since`. `_since` includes
 * that instant, so a change already applied may come again, with the same version: skip it. carevault stamps
 * versions in the order they commit, on every node, so nothing committed later carries an earlier lastUpdated
 * and nothing is missed (docs/fhir-server.md).
 */
export async function* changesSince<T extends Resource = Resource>(
  client: FhirClient,
  since: string | Date,
  o: ChangesOptions = {},
): AsyncGenerator<Change<T>> {
  const at = new Date(since);
  if (Number.isNaN(at.getTime())) throw new CarevaultError(`since must be an instant, not "${String(since)}"`);
  const count = o.count ?? 100;
  if (!Number.isInteger(count) || count < 1)
    throw new CarevaultError(`count must be a whole number from 1, not ${count}`);
  const { types, count: _count, ...request } = o;
  for (const t of types ?? [])
    if (!/^[A-Z][A-Za-z]+$/.test(t)) throw new CarevaultError(`"${t}" is not a resource type`);
  const params = { _since: at.toISOString(), _count: String(count) };
  const met = new Set<string>();
  for (const path of types?.length ? types.map((t) => `${t}/_history`) : ['_history']) {
    for await (const page of client.pages<T>(path, params, request)) {
      for (const entry of page.entry ?? []) {
        const change = changeOf<T>(entry as BundleEntry<T>);
        if (!change) throw new CarevaultError(`a history entry of ${path} names no resource`);
        const key = `${change.type}/${change.id}`;
        if (met.has(key)) continue;
        met.add(key);
        yield change;
      }
    }
  }
}

/** One history entry as a Change: who it is from the resource, or from the request URL or fullUrl of a deletion. */
function changeOf<T extends Resource>(entry: BundleEntry<T>): Change<T> | undefined {
  const deleted = entry.request?.method === 'DELETE' || entry.resource === undefined;
  const named =
    /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(entry.request?.url ?? '') ??
    /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(entry.fullUrl ?? '');
  const type = entry.resource?.resourceType ?? named?.[1];
  const id = entry.resource?.id ?? named?.[2];
  if (!type || !id) return undefined;
  const version = entry.resource?.meta?.versionId ?? /^W\/"(.+)"$/.exec(entry.response?.etag ?? '')?.[1];
  const lastUpdated = entry.resource?.meta?.lastUpdated ?? entry.response?.lastModified;
  return {
    type,
    id,
    ...(version ? { version } : {}),
    ...(lastUpdated ? { lastUpdated } : {}),
    ...(deleted ? {} : { resource: entry.resource as T }),
    deleted,
  };
}
