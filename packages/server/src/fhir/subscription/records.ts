import type { AuditWho } from '../../audit/balp.ts';
import type { ResourceWrite, Store } from '../../store/types.ts';
import { type StoredAccess, storeAccess } from '../async-jobs.ts';
import type { FhirContext } from '../context.ts';

/**
 * Who stands behind a version of a Subscription: the client that wrote it, with the access it had then.
 * Notifications are sent on its behalf and never show more than it may still search (dispatch.ts).
 */
export interface SubscriptionOwner {
  version: number;
  access: StoredAccess;
  who: AuditWho;
}

/** Where a Subscription's notifications stand: the last resource notified (time-index order) and failures. */
export interface DeliveryState {
  after: { lastUpdated: string; id: string };
  failures: number;
  /** ms since the epoch: the next attempt after a failure. */
  retryAt: number;
}

const ownerKey = (partition: string, id: string) => `subscription-owner:${partition}/${id}`;
const stateKey = (partition: string, id: string) => `subscription-state:${partition}/${id}`;
/** The vaults that hold (or held) Subscriptions: those the dispatcher looks at between full scans. */
const VAULTS = 'subscription-vaults';

async function readJson<T>(store: Store, key: string): Promise<T | undefined> {
  const text = await store.meta.get(key);
  return text ? (JSON.parse(text) as T) : undefined;
}

export const readOwner = (store: Store, partition: string, id: string) =>
  readJson<SubscriptionOwner>(store, ownerKey(partition, id));

export const saveOwner = (store: Store, partition: string, id: string, owner: SubscriptionOwner) =>
  store.meta.set(ownerKey(partition, id), JSON.stringify(owner));

export const readState = (store: Store, partition: string, id: string) =>
  readJson<DeliveryState>(store, stateKey(partition, id));

export const saveState = (store: Store, partition: string, id: string, state: DeliveryState) =>
  store.meta.set(stateKey(partition, id), JSON.stringify(state));

export async function subscriptionVaults(store: Store): Promise<string[]> {
  return (await readJson<string[]>(store, VAULTS)) ?? [];
}

export async function setSubscriptionVaults(store: Store, vaults: string[]): Promise<void> {
  await store.meta.set(VAULTS, JSON.stringify([...new Set(vaults)].sort()));
}

/**
 * After a client's write of Subscriptions committed: records their writer, and starts each new one at the
 * instant it was written (it notifies of what changes from then on). A write by a client also clears earlier
 * failures, so a Subscription in `error` that is set to `requested` again is tried at once, from where it
 * stopped — what changed meanwhile is notified, not lost. A deleted one's records go, so that one created
 * again under its id starts afresh instead of where the old one stopped.
 */
export async function recordWriters(ctx: FhirContext, writes: ResourceWrite[]): Promise<void> {
  const subscriptions = writes.filter((w) => w.type === 'Subscription');
  if (subscriptions.length === 0) return;
  for (const w of subscriptions.filter((s) => s.method === 'DELETE')) {
    await ctx.store.meta.delete(ownerKey(ctx.partition, w.id));
    await ctx.store.meta.delete(stateKey(ctx.partition, w.id));
  }
  const written = subscriptions.filter((w) => w.method !== 'DELETE');
  if (written.length === 0) return;
  for (const w of written) {
    await saveOwner(ctx.store, ctx.partition, w.id, {
      version: w.version,
      access: storeAccess(ctx.access),
      who: ctx.who,
    });
    const state = await readState(ctx.store, ctx.partition, w.id);
    await saveState(ctx.store, ctx.partition, w.id, {
      after: state?.after ?? { lastUpdated: w.lastUpdated, id: '' },
      failures: 0,
      retryAt: 0,
    });
  }
  // Two nodes adding a vault at once may overwrite each other's list: read it back, and add again if needed (the
  // dispatcher's periodic scan of every vault mends what still slips through).
  for (let attempt = 0; attempt < 3; attempt++) {
    const vaults = await subscriptionVaults(ctx.store);
    if (vaults.includes(ctx.partition)) return;
    await setSubscriptionVaults(ctx.store, [...vaults, ctx.partition]);
  }
}
