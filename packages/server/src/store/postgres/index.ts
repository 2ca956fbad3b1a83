import type pg from 'pg';
import type { Store } from '../types.ts';
import { auditStore } from './audit.ts';
import { clientStore, oidcStore, trustStore } from './auth-state.ts';
import { createPool, type PgTarget, parseDatabaseUrl, run } from './connection.ts';
import { listener } from './listener.ts';
import { migrate } from './migrate.ts';
import { resourceStore } from './resources.ts';
import { revocationStore } from './revocations.ts';
import { VAULT_ROLE } from './schema.ts';
import { userStore } from './users.ts';
import { partitionStore } from './vault.ts';

export { parseDatabaseUrl };

/**
 * Planner statistics follow the data (as `PRAGMA optimize` does for SQLite): a table of which more than half
 * the rows changed since its last ANALYZE (one that at least doubled) is analyzed now rather than at
 * autovacuum's next round — a vault loaded by `import` or a bulk transaction must not be searched with the
 * plans of an empty table (seconds, not ms). Smaller changes are autovacuum's (a tenth, once a minute): at a
 * tenth, every 5 s, a growing vault's tables and the audit trail's were analyzed at nearly every sweep, and
 * ANALYZE took ≈ 40 % of PostgreSQL's CPU during an ingest (docs/performance.md).
 */
async function analyzeChanged(pool: pg.Pool): Promise<void> {
  const stale = await run<{ relname: string }>(
    pool,
    `SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema()
       AND n_mod_since_analyze > 200 AND n_mod_since_analyze > n_live_tup / 2`,
  );
  for (const { relname } of stale) {
    if (/^[a-z_]+$/.test(relname)) await run(pool, `ANALYZE ${relname}`);
  }
}

/** Every table of the schema: ANALYZE samples a bounded number of rows per table, so this costs ~1 s at most. */
async function analyzeAll(pool: pg.Pool): Promise<void> {
  const tables = await run<{ tablename: string }>(
    pool,
    'SELECT tablename FROM pg_tables WHERE schemaname = current_schema()',
  );
  for (const { tablename } of tables) {
    if (/^[a-z_0-9]+$/.test(tablename)) await run(pool, `ANALYZE ${tablename}`);
  }
}

export interface PostgresStore extends Store {
  readonly target: PgTarget;
}

/** Opens a pooled PostgreSQL store; `migrate: false` leaves the schema as it is (for `db status`). */
export async function openPostgresStore(
  url: string,
  options: {
    poolSize?: number | undefined;
    migrate?: boolean | undefined;
    idleTransactionTimeout?: number | undefined;
    /** ms each statement of a vault read may run (the read pool's statement_timeout). */
    searchTimeout?: number | undefined;
  } = {},
): Promise<PostgresStore> {
  const target = parseDatabaseUrl(url);
  const pool = createPool(target, options.poolSize ?? 10, [], options.idleTransactionTimeout);
  // Vault reads have connections of their own that are the vault role and read-only from the start, so a
  // read needs no transaction around it to be confined: one roundtrip instead of three.
  const reads = createPool(
    target,
    options.poolSize ?? 10,
    [
      `role=${VAULT_ROLE}`,
      'default_transaction_read_only=on',
      // A costly search is cancelled by the database rather than holding a connection and its CPU on and on.
      `statement_timeout=${options.searchTimeout ?? 30_000}`,
    ],
    options.idleTransactionTimeout,
  );
  try {
    if (options.migrate !== false) await migrate(pool, target);
    else await run(pool, 'SELECT 1'); // fail here, with the reason, rather than at the first query
  } catch (err) {
    await pool.end().catch(() => {});
    await reads.end().catch(() => {});
    throw err;
  }
  const { resources, appendAudit, idle } = resourceStore(pool, reads, options.searchTimeout);
  // One listening connection per node keeps the in-memory mirrors (revocations, grants) current.
  const notifications = listener(target);
  const revocations = revocationStore(pool, target.schema, notifications);
  let closed = false;
  return {
    dialect: 'postgres',
    target,
    clients: clientStore(pool),
    trust: trustStore(pool),
    partitions: partitionStore(pool, target.schema, notifications),
    users: userStore(pool),
    resources,
    audit: auditStore(pool, appendAudit),
    oidc: oidcStore(pool),
    revocations,
    meta: {
      async get(key) {
        const [row] = await run(pool, 'SELECT value FROM store_meta WHERE key = ?', [key]);
        return (row as { value: string } | undefined)?.value;
      },
      async set(key, value) {
        await run(
          pool,
          'INSERT INTO store_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
          [key, value],
        );
      },
      async delete(key) {
        await run(pool, 'DELETE FROM store_meta WHERE key = ?', [key]);
      },
    },
    async sweep(now) {
      await run(pool, 'DELETE FROM oidc_payloads WHERE expires_at IS NOT NULL AND expires_at <= ?', [now]);
      await run(pool, 'DELETE FROM revoked_tokens WHERE expires_at <= ?', [now]);
      revocations.prune(now);
      await analyzeChanged(pool);
    },
    analyze: () => analyzeAll(pool),
    async ping() {
      try {
        await pool.query('SELECT 1');
        return true;
      } catch {
        return false;
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await idle();
      await notifications.close();
      await Promise.all([pool.end(), reads.end()]);
    },
  };
}
