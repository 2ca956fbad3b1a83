import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { postgresUrlFor, TEST_STORE } from './store.ts';

/**
 * Direct access to a test platform's database, bypassing carevault — the way an attacker with database access
 * (or an expiring clock) would change rows. `?` placeholders on both engines.
 */
export async function rawSql<T = Record<string, unknown>>(
  dataDir: string,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  if (TEST_STORE === 'sqlite') {
    const db = new Database(join(dataDir, 'carevault.sqlite'));
    try {
      const stmt = db.prepare(sql);
      if (stmt.reader) return stmt.all(...params) as T[];
      stmt.run(...params);
      return [];
    } finally {
      db.close();
    }
  }
  const client = await pgClientFor(dataDir);
  try {
    let n = 0;
    const r = await client.query(
      sql.replace(/\?/g, () => `$${++n}`),
      params,
    );
    return r.rows.map((row) =>
      Object.fromEntries(
        Object.entries(row).map(([k, v]) => [
          k,
          typeof v === 'string' && /^(seq|min|max|count)$/.test(k) ? Number(v) : v,
        ]),
      ),
    ) as T[];
  } finally {
    await client.end();
  }
}

/** A plain pg connection to the schema of a test platform's data directory (PostgreSQL run only). */
export async function pgClientFor(dataDir: string): Promise<pg.Client> {
  const url = new URL(postgresUrlFor(dataDir));
  const schema = url.searchParams.get('schema') as string;
  url.searchParams.delete('schema');
  const client = new pg.Client({ connectionString: url.href, options: `-c search_path=${schema}` });
  await client.connect();
  return client;
}
