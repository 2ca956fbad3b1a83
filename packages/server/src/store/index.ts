import { join } from 'node:path';
import { secureDataDir } from '../config/data-dir.ts';
import { ConfigError } from '../config/index.ts';
import { isConnectionError } from './postgres/connection.ts';
import { openPostgresStore, parseDatabaseUrl } from './postgres/index.ts';
import { openSqliteStore } from './sqlite/index.ts';
import type { Store } from './types.ts';

export type { ClientRecord, Store } from './types.ts';

export interface StoreOptions {
  dataDir: string;
  databaseUrl?: string | undefined;
  /** Where a warning about the data directory goes (stderr for admin commands, the log for the server). */
  warn?: ((message: string) => void) | undefined;
  /** PostgreSQL: leave the schema as it is instead of migrating it (`db status`). */
  migrate?: boolean | undefined;
  /** PostgreSQL: connections in the pool (default 10). */
  poolSize?: number | undefined;
  /** PostgreSQL: ms a transaction may wait on this node between statements (postgres/connection.ts). */
  idleTransactionTimeout?: number | undefined;
  /** ms a search may run (PostgreSQL: each statement of a read; SQLite: a search on a search thread). */
  searchTimeout?: number | undefined;
  /** SQLite: threads that answer searches (sqlite/search-threads.ts); 0: this thread, without a time limit. */
  searchThreads?: number | undefined;
}

const POSTGRES_URL = /^postgres(ql)?:\/\//;

/** The embedded SQLite store in the data directory, or PostgreSQL when CAREVAULT_DATABASE_URL names one. */
export async function openStore(options: StoreOptions): Promise<Store> {
  // Keys and the CA live in the data directory whichever engine holds the data.
  secureDataDir(options.dataDir, options.warn ?? ((m) => process.stderr.write(`warning: ${m}\n`)));
  if (options.databaseUrl) {
    if (!POSTGRES_URL.test(options.databaseUrl)) {
      throw new ConfigError('CAREVAULT_DATABASE_URL must be a postgres:// URL, or unset for the embedded SQLite store');
    }
    return openPostgres(options.databaseUrl, {
      migrate: options.migrate,
      poolSize: options.poolSize,
      idleTransactionTimeout: options.idleTransactionTimeout,
      searchTimeout: options.searchTimeout,
    });
  }
  return openSqliteStore(join(options.dataDir, 'carevault.sqlite'), {
    searchThreads: options.searchThreads,
    searchTimeout: options.searchTimeout,
  });
}

async function openPostgres(url: string, options: Parameters<typeof openPostgresStore>[1]) {
  let display = 'CAREVAULT_DATABASE_URL';
  try {
    display = parseDatabaseUrl(url).display;
    return await openPostgresStore(url, options);
  } catch (err) {
    // One line that names the database without its password: never the URL as given, never a stack trace.
    const e = err as { code?: string; message?: string; cause?: unknown };
    if (isConnectionError(err) || (e.cause && isConnectionError(e.cause))) {
      const reason = (e.cause as { code?: string } | undefined)?.code ?? e.code ?? 'unreachable';
      throw new ConfigError(`cannot connect to PostgreSQL at ${display} (${reason})`);
    }
    if (e.code && /^(28|3D)/.test(e.code)) throw new ConfigError(`PostgreSQL at ${display} refused: ${e.message}`);
    if (!e.code) throw new ConfigError(e.message ?? String(err));
    throw err;
  }
}
