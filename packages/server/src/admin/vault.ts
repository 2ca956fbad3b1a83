import type { Config } from '../config/index.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/types.ts';
import { addGrant, describeSubject } from '../vault/grants.ts';
import { addAccount, addPartition, describePartition } from '../vault/partitions.ts';

/** Opens the configured store for one admin command and closes it afterwards. */
export async function withStore<T>(config: Config, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await openStore({ dataDir: config.dataDir, databaseUrl: config.databaseUrl });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export const accountAdd = (config: Config, o: { urn?: string; mpiId?: string[] }) =>
  withStore(config, (s) => addAccount(s, { accountUrn: o.urn, mpiIds: o.mpiId }));

export const partitionAdd = (config: Config, name: string) => withStore(config, (s) => addPartition(s, name));

export const partitionList = (config: Config) =>
  withStore(config, async (s) => (await s.partitions.list()).map(describePartition));

export const grantAdd = (
  config: Config,
  o: { partition: string; client?: string; orgOid?: string; orgGln?: string; community?: string; scope: string },
) => withStore(config, (s) => addGrant(s, o));

export const grantList = (config: Config, partition?: string) =>
  withStore(config, async (s) =>
    (await s.partitions.listGrants(partition)).map((g) => ({
      partition: g.partition,
      ...describeSubject(g.subjectKind, g.subject),
      scope: g.scope,
    })),
  );
