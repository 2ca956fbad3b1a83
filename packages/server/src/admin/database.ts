import type { Config } from '../config/index.ts';
import { ConfigError } from '../config/index.ts';
import { openStore } from '../store/index.ts';
import { createPool, parseDatabaseUrl } from '../store/postgres/connection.ts';
import { migrationStatus } from '../store/postgres/migrate.ts';

function requirePostgres(config: Config): string {
  if (!config.databaseUrl) {
    throw new ConfigError(
      'the embedded SQLite store migrates itself; db commands need CAREVAULT_DATABASE_URL=postgres://…',
    );
  }
  return config.databaseUrl;
}

/** `carevault db migrate`: applies pending migrations (the server also does this at start). */
export async function dbMigrate(config: Config) {
  const url = requirePostgres(config);
  const before = await dbStatus(config);
  const store = await openStore({ dataDir: config.dataDir, databaseUrl: url });
  await store.close();
  const after = await dbStatus(config);
  return { ...after, appliedNow: before.pending.map((m) => m.version) };
}

/** `carevault db status`: which schema versions are applied and which are pending, without changing anything. */
export async function dbStatus(config: Config) {
  const url = requirePostgres(config);
  // Connects the way the store does, so an unreachable database gets the same one-line answer.
  const probe = await openStore({ dataDir: config.dataDir, databaseUrl: url, migrate: false });
  await probe.close();
  const target = parseDatabaseUrl(url);
  const pool = createPool(target, 1);
  try {
    const s = await migrationStatus(pool, target);
    return { database: target.display, ...s };
  } finally {
    await pool.end();
  }
}
