import { userInfo } from 'node:os';
import type { Coding } from 'fhir/r4.js';
import { EVENT } from '../audit/balp.ts';
import type { Config } from '../config/index.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/types.ts';
import { addGrant, describeSubject, removeGrant } from '../vault/grants.ts';
import { addAccount, addPartition, describePartition } from '../vault/partitions.ts';
import { adminAudit } from './operator.ts';

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

type GrantOptions = { partition: string; client?: string; orgOid?: string; orgGln?: string; community?: string };

export const grantAdd = (config: Config, o: GrantOptions & { scope: string }) =>
  withStore(config, async (s) => {
    const added = await addGrant(s, o);
    await grantChanged(s, config, 'carevault grant add', EVENT.grantAdded, added, `granted ${added.scope}`);
    return added;
  });

export const grantRemove = (config: Config, o: GrantOptions) =>
  withStore(config, async (s) => {
    const removed = await removeGrant(s, o);
    await grantChanged(s, config, 'carevault grant remove', EVENT.grantRemoved, removed, 'grant removed');
    return removed;
  });

/** Who may reach a vault changed at the console: audited with the command and the OS user who ran it. */
async function grantChanged(
  store: Store,
  config: Config,
  command: string,
  subtype: Coding,
  grant: { partition: string } & Record<string, unknown>,
  what: string,
) {
  const { partition, ...subject } = grant;
  const named = Object.entries(subject).find(([k]) => k !== 'scope' && k !== 'removed');
  await adminAudit(store, config).record({
    type: EVENT.securityAttributesChanged,
    subtype,
    action: 'U',
    outcome: '0',
    outcomeDesc: `${named ? `${named[0]} ${String(named[1])}` : 'grant'} on ${partition}: ${what}`,
    who: { clientId: command, user: { id: userInfo().username } },
    clientRole: '110150',
    partition,
  });
}

export const grantList = (config: Config, partition?: string) =>
  withStore(config, async (s) =>
    (await s.partitions.listGrants(partition)).map((g) => ({
      partition: g.partition,
      ...describeSubject(g.subjectKind, g.subject),
      scope: g.scope,
    })),
  );
