import type Database from 'better-sqlite3';
import type { Query } from '../sql/search.ts';

/**
 * The shared search SQL run on one connection, each statement text prepared once (at most ~500 kept: texts vary
 * with a search's shape). better-sqlite3 answers synchronously; the shared code awaits an already-settled promise.
 */
export function preparedQuery(db: Database.Database): Query {
  const statements = new Map<string, Database.Statement>();
  return async <T>(sql: string, params: unknown[]) => {
    let stmt = statements.get(sql);
    if (!stmt) {
      if (statements.size > 500) statements.clear();
      stmt = db.prepare(sql);
      statements.set(sql, stmt);
    }
    return stmt.all(...params) as T[];
  };
}
