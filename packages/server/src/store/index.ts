import { join } from 'node:path';
import { secureDataDir } from '../config/data-dir.ts';
import { ConfigError } from '../config/index.ts';
import { openSqliteStore } from './sqlite/index.ts';
import type { Store } from './types.ts';

export type { ClientRecord, Store } from './types.ts';

export interface StoreOptions {
  dataDir: string;
  databaseUrl?: string | undefined;
  /** Where a warning about the data directory goes (stderr for admin commands, the log for the server). */
  warn?: ((message: string) => void) | undefined;
}

export async function openStore(options: StoreOptions): Promise<Store> {
  if (options.databaseUrl?.startsWith('postgres')) {
    throw new ConfigError(
      'PostgreSQL storage is not available yet: unset CAREVAULT_DATABASE_URL to use the embedded SQLite store',
    );
  }
  if (options.databaseUrl) {
    throw new ConfigError('CAREVAULT_DATABASE_URL must be a postgres:// URL, or unset for the embedded SQLite store');
  }
  secureDataDir(options.dataDir, options.warn ?? ((m) => process.stderr.write(`warning: ${m}\n`)));
  return openSqliteStore(join(options.dataDir, 'carevault.sqlite'));
}
