import { StoreTimeoutError } from './errors.ts';
import { timeOrder } from './search-order.ts';
import type { SearchFilter, SearchQuery } from './types.ts';

/**
 * Whether a search asks for work that grows with the vault rather than with its page: a count of every match
 * (`_total`), an order other than lastUpdated (every match sorted), skipping by `_offset`, a substring or
 * negated condition (a scan of the type's index rows), a chain or `_has` (a join per match). The embedded store
 * gives these a search thread and a time limit (sqlite/search-threads.ts). The rest — conditions on indexed
 * values in lastUpdated order — start on the server's thread: a page costs what its driving index yields, and
 * a dense driving condition walks the time index; only when that walk misses does the search move to a thread
 * (sql/search.ts `dense`).
 */
export function isCostly(q: SearchQuery): boolean {
  const byId = q.filters.some((f) => f.kind === 'id');
  return q.total || q.offset > 0 || !timeOrder(q) || q.filters.some((f) => costlyFilter(f, byId));
}

function costlyFilter(f: SearchFilter, byId: boolean): boolean {
  switch (f.kind) {
    case 'proxy':
      // Two index probes per candidate: cheap for the ids named (a read's scope check), a scan of the type else.
      return !byId;
    case 'chain':
    case 'has':
    case 'missing':
    case 'token-text':
    case 'not':
      return true;
    case 'token':
      return f.not === true;
    case 'string':
      return f.mode === 'contains' || f.mode === 'suffix';
    case 'or':
    case 'and':
      return f.filters.some((x) => costlyFilter(x, byId));
    default:
      return false;
  }
}

/**
 * The searches of one transaction (the conditions of conditional writes, checked again under the write lock) run
 * where nothing interrupts them — SQLite's own thread, PostgreSQL's write connection — while every writer waits:
 * once they have taken `ms` together, the next to end fails with StoreTimeoutError and the transaction rolls
 * back. A transaction Bundle of a thousand costly conditions so stops after about `ms`, not a thousand times it.
 */
export function searchBudget(ms: number): <T>(search: () => Promise<T>) => Promise<T> {
  let spent = 0;
  return async (search) => {
    const started = performance.now();
    const value = await search();
    spent += performance.now() - started;
    if (spent > ms) throw new StoreTimeoutError(`the transaction's searches ran longer than ${ms / 1000} s`);
    return value;
  };
}
