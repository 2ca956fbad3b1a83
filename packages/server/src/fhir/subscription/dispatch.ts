import { randomUUID } from 'node:crypto';
import { mkdir, rm, utimes } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type AuditWho, EVENT } from '../../audit/balp.ts';
import type { AuditTrail } from '../../audit/trail.ts';
import type { FoundResource, Store } from '../../store/types.ts';
import { patientsIn } from '../../vault/compartment.ts';
import { scopesOf, type VaultAccess } from '../../vault/policy.ts';
import { loadAccess } from '../async-jobs.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { claimLock, holdsLock } from '../file-lock.ts';
import { updateIn } from '../interactions/update.ts';
import { prepare } from '../resource-body.ts';
import { extractIndex } from '../search/extract.ts';
import { parseSearch } from '../search/parse.ts';
import { restrictionFilter } from '../search/restrictions.ts';
import { transact } from '../transact.ts';
import { criteriaQuery, type SubscriptionParts, subscriptionParts } from './accept.ts';
import { notify } from './notify.ts';
import {
  type DeliveryState,
  readOwner,
  readState,
  type SubscriptionOwner,
  saveOwner,
  saveState,
  setSubscriptionVaults,
  subscriptionVaults,
} from './records.ts';

const STALE_MS = 30_000;
const HEARTBEAT_MS = 5_000;
/** Notifications of one Subscription per round: one slow endpoint holds up the others no longer than this. */
const BATCH = 50;
/** Every vault is looked at this often, beside those recorded as holding Subscriptions. */
const RESCAN_MS = 600_000;
const MAX_BACKOFF_MS = 300_000;
/** The agent of the status changes the server makes itself. */
const SERVER: AuditWho = { clientId: 'carevault-subscriptions' };

export interface DispatcherOptions {
  store: Store;
  audit: AuditTrail;
  fhirBase: string;
  /** A file every node sees (`<data-dir>/jobs/subscriptions.lock`): one node delivers at a time. */
  lockFile: string;
  fetch: typeof fetch;
  pollMs: number;
  retries: number;
  endpoints: string[];
  log: { error(o: object, msg: string): void; info(o: object, msg: string): void };
}

type Sub = Record<string, unknown> & { id: string; meta: { versionId: string; lastUpdated: string } };

/**
 * Delivers the vaults' rest-hook Subscriptions (R4 subscription.html). One node of those sharing the data
 * directory holds the lock and looks at every vault with Subscriptions each `pollMs`: for each `active` one,
 * the resources its criteria matches that changed after the last one notified, in the vault's time order, up to
 * the store's committed-through instant (so that a write still committing is not passed over). A resource is
 * notified once per change the dispatcher sees (changes between two looks are one notification of the current
 * version); deletions are not notified. Each notification is sent as the client that wrote the Subscription,
 * within what it may still search in the vault, and audited before it leaves.
 */
export class SubscriptionDispatcher {
  private readonly node = randomUUID();
  private timer: NodeJS.Timeout | undefined;
  private beat: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private scannedAt = 0;
  private readonly active = parseSearch('Subscription', [['status', 'requested,active']], {
    base: '',
    strict: true,
  }).query;

  constructor(private readonly o: DispatcherOptions) {}

  start(): void {
    this.timer = setInterval(() => this.tick(), this.o.pollMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearInterval(this.beat);
    await this.running;
    if (await holdsLock(this.o.lockFile, this.node)) await rm(this.o.lockFile, { force: true });
  }

  private tick(): void {
    if (this.running || this.stopped) return;
    this.running = this.round()
      .catch((err: Error) => this.o.log.error({ err: { message: err.message } }, 'subscription delivery'))
      .finally(() => {
        this.running = undefined;
      });
  }

  private async round(): Promise<void> {
    if (!(await this.lead())) return;
    const vaults = await this.vaults();
    // Asked only when there is something to deliver: on PostgreSQL it waits for the write lock.
    if (vaults.length === 0) return;
    const through = new Date(await this.o.store.resources.committedThrough()).toISOString();
    for (const partition of vaults) {
      const { matches } = await this.o.store.resources.search(partition, { ...this.active, limit: 1000 });
      for (const m of matches) {
        if (this.stopped) return;
        await this.serve(partition, m, through).catch((err: Error) =>
          this.o.log.error({ vault: partition, subscription: m.id, err: { message: err.message } }, 'subscription'),
        );
      }
    }
  }

  /** Whether this node delivers now: it holds the lock, or took it over from a node gone quiet. */
  private async lead(): Promise<boolean> {
    const lock = this.o.lockFile;
    if (await holdsLock(lock, this.node)) return true;
    clearInterval(this.beat);
    await mkdir(dirname(lock), { recursive: true, mode: 0o700 });
    if (!(await claimLock(lock, this.node, STALE_MS))) return false;
    this.beat = setInterval(() => void utimes(lock, new Date(), new Date()).catch(() => {}), HEARTBEAT_MS);
    this.beat.unref();
    return true;
  }

  /** The vaults recorded as holding Subscriptions, and every vault now and then (a record two nodes raced on). */
  private async vaults(): Promise<string[]> {
    const store = this.o.store;
    if (Date.now() - this.scannedAt < RESCAN_MS) return subscriptionVaults(store);
    this.scannedAt = Date.now();
    const held: string[] = [];
    for (const p of await store.partitions.list()) {
      const any = await store.resources.search(p.name, { ...this.active, filters: [], limit: 1 });
      if (any.matches.length > 0) held.push(p.name);
    }
    await setSubscriptionVaults(store, held);
    return held;
  }

  private async serve(partition: string, match: FoundResource, through: string): Promise<void> {
    let sub = JSON.parse(match.content) as Sub;
    const base = `${this.o.fhirBase}/${partition}`;
    const owner = await readOwner(this.o.store, partition, sub.id);
    if (owner?.version !== Number(sub.meta.versionId)) {
      // Its writer is being recorded right now — or was never, by a node that died after the commit.
      if (Date.now() - Date.parse(sub.meta.lastUpdated) > STALE_MS)
        await this.setStatus(partition, sub, undefined, 'error', 'the server did not record who wrote this version');
      return;
    }
    const ctx: FhirContext = {
      store: this.o.store,
      partition,
      base,
      access: loadAccess(owner.access),
      // The writer, without what belonged to the request that wrote the Subscription (its address and ids).
      who: { ...owner.who, address: undefined, requestId: undefined, correlationId: undefined },
      audit: this.o.audit,
    };
    let parts: SubscriptionParts;
    try {
      parts = subscriptionParts(sub, this.o.endpoints);
      if (parts.end && Date.parse(parts.end) <= Date.now()) {
        await this.setStatus(partition, sub, owner, 'off', undefined);
        return;
      }
      ctx.access = await this.stillGranted(ctx.access);
      criteriaQuery(parts, ctx.access, base);
    } catch (err) {
      if (!(err instanceof FhirError)) throw err;
      await this.setStatus(partition, sub, owner, 'error', err.diagnostics);
      return;
    }
    if (sub.status === 'requested') {
      const activated = await this.setStatus(partition, sub, owner, 'active', undefined);
      if (!activated) return;
      sub = activated;
    }
    const state: DeliveryState = (await readState(this.o.store, partition, sub.id)) ?? {
      after: { lastUpdated: sub.meta.lastUpdated, id: '' },
      failures: 0,
      retryAt: 0,
    };
    if (state.retryAt > Date.now()) return;
    const bounded = { ...parts, params: [...parts.params, ['_lastUpdated', `le${through}`] as [string, string]] };
    const { query, restrictions } = criteriaQuery(bounded, ctx.access, base);
    const restriction = restrictionFilter(ctx, parts.type, restrictions);
    const { matches } = await this.o.store.resources.search(partition, {
      ...query,
      filters: restriction ? [...query.filters, restriction] : query.filters,
      limit: BATCH,
      offset: 0,
      after: state.after,
    });
    for (const r of matches) {
      if (this.stopped || !(await holdsLock(this.o.lockFile, this.node))) return;
      await this.audit(ctx, sub.id, r, undefined);
      const failure = await notify(this.o.fetch, parts, r);
      if (failure) {
        await this.audit(ctx, sub.id, r, failure);
        const failures = state.failures + 1;
        const retryAt = Date.now() + Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (failures - 1));
        await saveState(this.o.store, partition, sub.id, { ...state, failures, retryAt });
        if (failures > this.o.retries)
          await this.setStatus(partition, sub, owner, 'error', `${failure}, ${failures} attempts in a row`);
        return;
      }
      state.after = { lastUpdated: r.lastUpdated as string, id: r.id };
      state.failures = 0;
      await saveState(this.o.store, partition, sub.id, state);
    }
  }

  /** The writer's access with the vault's grants of now: a disabled client or a withdrawn grant ends delivery. */
  private async stillGranted(access: VaultAccess): Promise<VaultAccess> {
    const client = await this.o.store.clients.get(access.clientId);
    if (!client || client.disabled)
      throw new FhirError(403, 'forbidden', `the client ${access.clientId} that wrote it is disabled or removed`);
    const grants = await this.o.store.partitions.grantsFor(
      access.partition,
      access.clientId,
      access.organizations ?? [],
    );
    if (grants.length === 0)
      throw new FhirError(403, 'forbidden', `the client ${access.clientId} that wrote it has no grant here any more`);
    return { ...access, grantScopes: grants.flatMap((g) => scopesOf(g.scope)) };
  }

  /** A notification's AuditEvent (DICOM Export): written before it leaves, and again with the failure. */
  private async audit(ctx: FhirContext, subscription: string, r: FoundResource, failure: string | undefined) {
    const version = /"versionId":"([0-9]+)"/.exec(r.content)?.[1];
    await this.o.audit.record({
      type: EVENT.export,
      action: 'R',
      outcome: failure ? '8' : '0',
      outcomeDesc: failure,
      who: ctx.who,
      clientRole: '110152',
      partition: ctx.partition,
      patients: patientsIn(r.type, r.id, extractIndex(JSON.parse(r.content) as Record<string, unknown>)),
      objects: [`${r.type}/${r.id}/_history/${version}`, `Subscription/${subscription}`],
      nen7513: { autorisatieprotocol: `subscription:${ctx.access.clientId}` },
    });
  }

  /**
   * The server's own change of a Subscription's status (R4: `requested` → `active`, `error` with the reason in
   * `error`, `off` past its `end`), as an update of the version it read: a client's write meanwhile wins.
   */
  private async setStatus(
    partition: string,
    sub: Sub,
    owner: SubscriptionOwner | undefined,
    status: string,
    error: string | undefined,
  ): Promise<Sub | undefined> {
    const { error: _previous, ...rest } = sub;
    const next = { ...rest, status, ...(error ? { error } : {}) };
    const access: VaultAccess = owner
      ? loadAccess(owner.access)
      : { partition, clientId: '', tokenScopes: [], grantScopes: [], person: false };
    const ctx: FhirContext = {
      store: this.o.store,
      partition,
      base: `${this.o.fhirBase}/${partition}`,
      access,
      who: SERVER,
      audit: this.o.audit,
      subscriptionDispatcher: true,
    };
    let written: Awaited<ReturnType<typeof updateIn>>;
    try {
      written = await transact(ctx, (tx) => updateIn(tx, prepare(next, sub.id), Number(sub.meta.versionId)));
    } catch (err) {
      if (err instanceof FhirError && err.status === 412) return undefined;
      throw err;
    }
    if (owner) await saveOwner(this.o.store, partition, sub.id, { ...owner, version: written.version.version });
    this.o.log.info({ vault: partition, subscription: sub.id, status, reason: error }, 'subscription status');
    return JSON.parse(written.version.content as string) as Sub;
  }
}
