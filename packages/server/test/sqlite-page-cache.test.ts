// SQLite's page cache follows the database's size (store/sqlite/page-cache.ts): under 1 GiB, where every commit
// that split a page scans the whole cache, the file is read through a memory map and 8 MB are cached; from 1 GiB
// on, 64 MB are cached and nothing is mapped.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { pageCacheFor, pageCachePolicy, SCANNING_BELOW_BYTES } from '../src/store/sqlite/page-cache.ts';
import { TEST_STORE } from './helpers/store.ts';

describe('SQLite page cache', { skip: TEST_STORE !== 'sqlite' && 'SQLite run only' }, () => {
  test('a database under 1 GiB is mapped with a small cache; from 1 GiB on, cached without a map', () => {
    assert.equal(SCANNING_BELOW_BYTES, 1024 * 1024 * 1024);
    assert.deepEqual(pageCacheFor(0), { cacheKib: 8192, mmapBytes: 2 ** 31 });
    assert.deepEqual(pageCacheFor(SCANNING_BELOW_BYTES - 4096), { cacheKib: 8192, mmapBytes: 2 ** 31 });
    assert.deepEqual(pageCacheFor(SCANNING_BELOW_BYTES), { cacheKib: 65536, mmapBytes: 0 });
    assert.deepEqual(pageCacheFor(50 * SCANNING_BELOW_BYTES), { cacheKib: 65536, mmapBytes: 0 });
  });

  // Every other SQLite test runs on a mapped database: these check only that the map and the cache are set.
  test('the settings reach the connection', () => {
    const dir = mkdtempSync(join(tmpdir(), 'carevault-page-cache-'));
    try {
      const db = new Database(join(dir, 'raw.sqlite'));
      db.pragma('journal_mode = WAL');
      pageCachePolicy(db)();
      assert.equal(db.pragma('cache_size', { simple: true }), -8192);
      // SQLite caps the map at its compile-time maximum (just under 2 GiB); 0 would mean not mapped.
      assert.ok((db.pragma('mmap_size', { simple: true }) as number) > SCANNING_BELOW_BYTES);
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
