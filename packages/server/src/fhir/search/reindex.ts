import { createHash } from 'node:crypto';
import type { Store } from '../../store/types.ts';
import { SEARCH_PARAMETERS } from './definitions.ts';
import { extractIndex } from './extract.ts';

/**
 * Which definitions built a database's search index: a hash of the search parameters (and a number to bump when
 * extraction itself changes). A database built by other definitions answers some searches wrongly until it is
 * reindexed — e.g. the `as Quantity` → `ofType(Quantity)` repair of Observation component values.
 */
const EXTRACTION = 5;
export const SEARCH_INDEX_GENERATION = createHash('sha256')
  .update(`${EXTRACTION}:${JSON.stringify(SEARCH_PARAMETERS)}`)
  .digest('hex')
  .slice(0, 16);
const META_KEY = 'search-index';
const PAGE = 500;

export interface ReindexReport {
  partitions: number;
  resources: number;
}

/** Rebuilds the search index rows of every current resource (of one vault, or all), page by page. */
export async function reindex(
  store: Store,
  o: { partition?: string | undefined; progress?: (partition: string, done: number) => void } = {},
): Promise<ReindexReport> {
  const partitions = o.partition ? [o.partition] : (await store.partitions.list()).map((p) => p.name);
  let resources = 0;
  for (const partition of partitions) {
    let after: { type: string; id: string } | undefined;
    let done = 0;
    for (;;) {
      const page = await store.resources.scan(partition, after, PAGE);
      if (page.length === 0) break;
      const items = page.map((r) => ({
        type: r.type,
        id: r.id,
        version: r.version,
        index: extractIndex(JSON.parse(r.content) as Record<string, unknown>),
      }));
      done += await store.resources.reindex(partition, items);
      const last = page[page.length - 1] as { type: string; id: string };
      after = { type: last.type, id: last.id };
      o.progress?.(partition, done);
      if (page.length < PAGE) break;
    }
    resources += done;
  }
  if (!o.partition) await store.meta.set(META_KEY, SEARCH_INDEX_GENERATION);
  return { partitions: partitions.length, resources };
}

/**
 * A database without resources has no index that could be stale: it is stamped with these definitions, so that
 * what `import` (or `serve`) writes next is not rebuilt at the next start. Before, a vault imported into a new
 * data directory was reindexed whole when the server first started (300 MB of documents: 22 s, 900 MiB).
 */
export async function stampIfEmpty(store: Store): Promise<void> {
  if ((await store.meta.get(META_KEY)) !== undefined) return;
  for (const p of await store.partitions.list()) {
    if ((await store.resources.scan(p.name, undefined, 1)).length > 0) return;
  }
  await store.meta.set(META_KEY, SEARCH_INDEX_GENERATION);
}

/** At start: reindexes when the database's index was built by other search parameter definitions. */
export async function reindexIfStale(store: Store, log: (msg: string) => void): Promise<ReindexReport | undefined> {
  await stampIfEmpty(store);
  if ((await store.meta.get(META_KEY)) === SEARCH_INDEX_GENERATION) return undefined;
  const started = Date.now();
  const report = await reindex(store);
  if (report.resources > 0) {
    log(
      `search index rebuilt for new search parameter definitions: ${report.resources} resources in ${report.partitions} vaults, ${Date.now() - started} ms`,
    );
  }
  return report;
}
