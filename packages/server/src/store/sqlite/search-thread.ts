/**
 * A search thread (search-threads.ts): answers searches from a read-only connection of its own, so that a
 * costly search keeps one thread busy instead of the server's event loop.
 */
import { statSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { searchQueries } from '../sql/search.ts';
import { SQLITE } from '../sql/tables.ts';
import type { SearchRequest, SearchResponse } from './search-threads.ts';

const { file } = workerData as { file: string };
const db = new Database(file, { readonly: true, fileMustExist: true });
db.pragma('busy_timeout = 5000');
// Read through a memory map like the writing connection does below 1 GiB (page-cache.ts); above it, a cache.
db.pragma(statSync(file).size < 2 ** 30 ? `mmap_size = ${2 ** 31}` : 'cache_size = -65536');

const statements = new Map<string, Database.Statement>();
const queries = searchQueries(async <T>(sql: string, params: unknown[]) => {
  let stmt = statements.get(sql);
  if (!stmt) {
    if (statements.size > 500) statements.clear();
    stmt = db.prepare(sql);
    statements.set(sql, stmt);
  }
  return stmt.all(...params) as T[];
}, SQLITE);

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
