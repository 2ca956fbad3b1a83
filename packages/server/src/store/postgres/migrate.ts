import type pg from 'pg';
import { checkout, type PgTarget, rethrow } from './connection.ts';
import { MIGRATIONS } from './schema.ts';

/** Advisory-lock namespace of carevault (first key); the second key is the schema's hash. */
export const LOCK_NAMESPACE = 0x0ca2e;
export const LOCK_WRITE = `${LOCK_NAMESPACE}, hashtext(current_schema() || ':write')`;

export interface MigrationStatus {
  schema: string;
  applied: { version: number; name: string; appliedAt: number }[];
  pending: { version: number; name: string }[];
}

async function applied(client: pg.PoolClient): Promise<MigrationStatus['applied']> {
  const exists = await client.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS present");
  if (!exists.rows[0]?.present) return [];
  const r = await client.query('SELECT version, name, applied_at FROM schema_migrations ORDER BY version');
  return r.rows.map((row) => ({ version: row.version, name: row.name, appliedAt: Number(row.applied_at) }));
}

/**
 * Brings the schema to the newest version. Nodes that start together serialize on an advisory lock, so
 * each migration runs once; each runs in its own transaction with its bookkeeping row.
 */
export async function migrate(pool: pg.Pool, target: PgTarget): Promise<number[]> {
  const client = await checkout(pool);
  const done: number[] = [];
  try {
    await client.query(`SELECT pg_advisory_lock(${LOCK_NAMESPACE}, hashtext($1))`, [`${target.schema}:migrate`]);
    try {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${target.schema}`);
      await client.query(`SET search_path TO ${target.schema}`);
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)`);
      const have = new Set((await applied(client)).map((m) => m.version));
      for (const m of MIGRATIONS) {
        if (have.has(m.version)) continue;
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
            m.version,
            m.name,
            Date.now(),
          ]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK').catch(() => {});
          throw err;
        }
        done.push(m.version);
      }
    } finally {
      await client.query(`SELECT pg_advisory_unlock(${LOCK_NAMESPACE}, hashtext($1))`, [`${target.schema}:migrate`]);
    }
    client.release();
    return done;
  } catch (err) {
    client.release(true);
    return rethrow(err);
  }
}

export async function migrationStatus(pool: pg.Pool, target: PgTarget): Promise<MigrationStatus> {
  const client = await checkout(pool);
  try {
    const schemaExists = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [target.schema]);
    const have = schemaExists.rowCount ? await applied(client) : [];
    client.release();
    const versions = new Set(have.map((m) => m.version));
    return {
      schema: target.schema,
      applied: have,
      pending: MIGRATIONS.filter((m) => !versions.has(m.version)).map(({ version, name }) => ({ version, name })),
    };
  } catch (err) {
    client.release(true);
    return rethrow(err);
  }
}
