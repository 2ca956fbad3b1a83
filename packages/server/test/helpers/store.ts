import { createHash } from 'node:crypto';

/**
 * Which store this test run uses: the suite runs once on SQLite and once on PostgreSQL (scripts/test.mjs sets
 * CAREVAULT_TEST_STORE and a fresh CAREVAULT_TEST_DATABASE_URL for the second run).
 */
export const TEST_STORE: 'sqlite' | 'postgres' =
  process.env.CAREVAULT_TEST_STORE === 'postgres' && process.env.CAREVAULT_TEST_DATABASE_URL ? 'postgres' : 'sqlite';

/** A PostgreSQL URL with a schema of its own for `key` (a fresh data directory: a fresh schema). */
export function postgresUrlFor(key: string): string {
  const base = process.env.CAREVAULT_TEST_DATABASE_URL;
  if (!base) throw new Error('CAREVAULT_TEST_DATABASE_URL is not set');
  const url = new URL(base);
  url.searchParams.set('schema', `t_${createHash('sha256').update(key).digest('hex').slice(0, 24)}`);
  return url.href;
}

/**
 * Environment that gives a carevault process working on `dataDir` its own database: nothing on SQLite (the
 * data directory holds it), a schema named after the data directory on PostgreSQL — so every command and
 * server started on the same data directory shares it, as they would share the SQLite file.
 */
export function storeEnv(dataDir: string): Record<string, string> {
  return TEST_STORE === 'postgres' ? { CAREVAULT_DATABASE_URL: postgresUrlFor(dataDir) } : {};
}
