/**
 * A search thread (search-threads.ts): answers searches from a read-only connection of its own, so that a
 * costly search keeps one thread busy instead of the server's event loop.
 */
import { statSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { searchQueries } from '../sql/search.ts';
import { SQLITE } from '../sql/tables.ts';
import { pageCacheFor } from './page-cache.ts';
import type { SearchRequest, SearchResponse } from './search-threads.ts';
import { preparedQuery } from './statements.ts';

const { file } = workerData as { file: string };
const db = new Database(file, { readonly: true, fileMustExist: true });
db.pragma('busy_timeout = 5000');
// The writing connection's settings for the database's size (page-cache.ts): a memory map below 1 GiB.
const { cacheKib, mmapBytes } = pageCacheFor(statSync(file).size);
db.pragma(`cache_size = -${cacheKib}`);
db.pragma(`mmap_size = ${mmapBytes}`);

const queries = searchQueries(preparedQuery(db), SQLITE);

const begin = db.prepare('BEGIN');
const commit = db.prepare('COMMIT');

parentPort?.postMessage({ ready: true } satisfies SearchResponse);
parentPort?.on('message', async (m: SearchRequest) => {
  let answer: SearchResponse;
  try {
    // One read transaction: a search's statements (its page, its count) see the same committed state.
    begin.run();
    answer = { id: m.id, value: await queries.search(...m.args) };
  } catch (err) {
    const e = err as { name?: string; message?: string; code?: string };
    answer = { id: m.id, error: { name: e.name ?? 'Error', message: e.message ?? String(err), code: e.code } };
  } finally {
    if (db.inTransaction) commit.run();
  }
  parentPort?.postMessage(answer);
});
