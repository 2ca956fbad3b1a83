import { join } from 'node:path';
import { openSqliteStore } from './sqlite/index.ts';
import type { Store } from './types.ts';

export type { ClientRecord, Store } from './types.ts';

export interface StoreOptions {
  dataDir: string;
  databaseUrl?: string | undefined;
}

export async function openStore(options: StoreOptions): Promise<Store> {
  if (options.databaseUrl?.startsWith('postgres')) {
    throw new Error(
      'PostgreSQL storage is not available yet: unset CAREVAULT_DATABASE_URL to use the embedded SQLite store',
    );
  }
  return openSqliteStore(join(options.dataDir, 'carevault.sqlite'));
}
