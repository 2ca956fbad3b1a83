import type Database from 'better-sqlite3';

/**
 * Below this size a commit that split a B-tree page walks SQLite's whole page-cache hash table: while it
 * reorders the new sibling pages, `balance_nonroot` parks one under the number of the lock page (the page
 * holding byte 1 GiB: 262,145 at 4 KB), and at the end of the transaction `pcache1Truncate` drops every cached
 * page numbered above the database's size — by scanning every bucket, because that number lies further above
 * the size than the table is long. From 1 GiB on, the lock page is inside the file and nothing is scanned.
 */
export const SCANNING_BELOW_BYTES = 2 ** 30;

export interface PageCacheSettings {
  /** `PRAGMA cache_size` in KiB. */
  cacheKib: number;
  /** `PRAGMA mmap_size` in bytes (SQLite caps it at its compile-time maximum, 2 GB here). */
  mmapBytes: number;
}

/**
 * Audit groups split index pages at nearly every commit, so under 1 GiB the scan is paid per group: with 64 MB
 * cached it was 3.6–4.7 % of a read's CPU, and looking pages up in that large table (`pcache1Fetch`) 4.9 % of a
 * search's. Such a database is read through a memory map of the file — a page that is not in the WAL is then
 * neither copied nor kept in the cache — and caches 8 MB (the WAL's pages, the transaction's own). A larger one
 * keeps the 64 MB cache for the hot index pages of a file too large to map whole, as before.
 */
export function pageCacheFor(bytes: number): PageCacheSettings {
  return bytes < SCANNING_BELOW_BYTES ? { cacheKib: 8192, mmapBytes: 2 ** 31 } : { cacheKib: 65536, mmapBytes: 0 };
}

/** Applies the settings for the database's current size when they changed; called at open and on every sweep. */
export function pageCachePolicy(db: Database.Database): () => void {
  let applied: PageCacheSettings | undefined;
  return () => {
    const pages = db.pragma('page_count', { simple: true }) as number;
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    const next = pageCacheFor(pages * pageSize);
    if (applied?.cacheKib === next.cacheKib && applied.mmapBytes === next.mmapBytes) return;
    db.pragma(`cache_size = -${next.cacheKib}`);
    db.pragma(`mmap_size = ${next.mmapBytes}`);
    applied = next;
  };
}
