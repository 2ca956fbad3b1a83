/**
 * The one storage interface. Async so that the PostgreSQL dialect can implement it unchanged;
 * nothing outside store/ writes SQL.
 */
import type { AuditRecord, AuditStore } from './audit-types.ts';
import type {
  IncludeBound,
  IndexRows,
  MetaInUse,
  ScannedResource,
  SearchQuery,
  SearchResult,
  SizedResource,
} from './search-types.ts';

export type * from './audit-types.ts';
export type { Prefix } from './search-prefix.ts';
export type * from './search-types.ts';

export interface ClientRecord {
  clientId: string;
  /** oidc-provider client metadata (snake_case), plus carevault's own `carevault` member. */
  metadata: Record<string, unknown>;
  disabled: boolean;
  createdAt: number;
}

/** Rows behind oidc-provider's adapter: one per model instance (grants, codes, replay ids, opaque tokens…). */
export interface OidcPayloadRecord {
  payload: Record<string, unknown>;
  expiresAt: number | null;
  consumed: boolean;
}

export interface OidcPayloadStore {
  upsert(
    model: string,
    id: string,
    payload: Record<string, unknown>,
    expiresAt: number | null,
    index: { grantId?: string; userCode?: string; uid?: string },
  ): Promise<void>;
  find(model: string, id: string): Promise<OidcPayloadRecord | undefined>;
  findBy(model: string, column: 'user_code' | 'uid', value: string): Promise<OidcPayloadRecord | undefined>;
  /** Inserts only when absent; true when the row was new (used for jti replay detection). */
  insertIfAbsent(model: string, id: string, expiresAt: number): Promise<boolean>;
  consume(model: string, id: string, at: number): Promise<void>;
  destroy(model: string, id: string): Promise<void>;
  revokeByGrantId(grantId: string): Promise<void>;
  /** Live grants (consents) of one account, for withdrawing them; an administrative scan, not a hot path. */
  grantsOfAccount(accountId: string): Promise<{ grantId: string; clientId: string; expiresAt: number | null }[]>;
}

export interface ClientStore {
  insert(record: ClientRecord): Promise<void>;
  /** Inserts or replaces the metadata; an existing row keeps its `disabled` flag and creation time. */
  save(record: ClientRecord): Promise<void>;
  get(clientId: string): Promise<ClientRecord | undefined>;
  list(): Promise<ClientRecord[]>;
  setDisabled(clientId: string, disabled: boolean): Promise<boolean>;
}

/** A trust community (seed 003): a network CA whose certificate holders may authenticate without registering. */
export interface TrustCommunityRecord {
  name: string;
  caPem: string;
  /** The network's current CRL (PEM), if the operator gave one. */
  crlPem: string | undefined;
  /** Where that CRL is published (`trust add --crl <url>`): the server fetches it again (trust/crl-refresh.ts). */
  crlUrl?: string | undefined;
  /** Scopes every member may be granted. */
  scope: string;
  createdAt: number;
}

export interface TrustStore {
  /** Creates or replaces a community. */
  put(record: TrustCommunityRecord): Promise<void>;
  get(name: string): Promise<TrustCommunityRecord | undefined>;
  list(): Promise<TrustCommunityRecord[]>;
  remove(name: string): Promise<boolean>;
  /** Stores a fetched CRL, unless the community was replaced meanwhile (another CA or URL); false then. */
  setCrl(name: string, fetched: { caPem: string; crlUrl: string; crlPem: string }): Promise<boolean>;
}

/** Deny-list for self-contained (JWT) access tokens, keyed by jti, kept until the token would expire anyway. */
export interface RevocationStore {
  revoke(jti: string, expiresAt: number): Promise<void>;
  isRevoked(jti: string): Promise<boolean>;
}

export interface PartitionRecord {
  name: string;
  accountUrn: string | undefined;
  identifiers: string[];
  createdAt: number;
}

export type GrantSubjectKind = 'client' | 'org';

export interface GrantRecord {
  partition: string;
  subjectKind: GrantSubjectKind;
  subject: string;
  scope: string;
  createdAt: number;
}

export interface PartitionStore {
  /** False when the name or the account URN or one of the identifiers is taken. */
  create(record: PartitionRecord): Promise<boolean>;
  get(name: string): Promise<PartitionRecord | undefined>;
  list(): Promise<PartitionRecord[]>;
  /** Creates or replaces the grant of one subject on one partition. */
  putGrant(grant: GrantRecord): Promise<void>;
  /** Ends the grant of one subject on one partition (every node stops honouring it); false when there was none. */
  removeGrant(partition: string, subjectKind: GrantSubjectKind, subject: string): Promise<boolean>;
  /** Grants on `partition` of the client itself and of its organizations (`<oid>` or `gln:<gln>` subjects). */
  grantsFor(partition: string, clientId: string, organizations: string[]): Promise<GrantRecord[]>;
  listGrants(partition?: string): Promise<GrantRecord[]>;
  /** The partition whose account carries this identifier (an MPI id URN), if any. */
  findByIdentifier(value: string): Promise<PartitionRecord | undefined>;
  /** Whether any account carries an identifier starting with `prefix` (a known assigning authority). */
  hasIdentifierPrefix(prefix: string): Promise<boolean>;
}

/** A person who logs in at the authorization server (SMART app launch). */
export interface UserRecord {
  username: string;
  /** scrypt hash in PHC-like form (auth/passwords.ts); never a password. */
  passwordHash: string;
  /** The vault of the user's own account, if any. */
  partition: string | undefined;
  /** Relative reference (Patient/x, Practitioner/y) inside `partition`, or undefined. */
  fhirUser: string | undefined;
  disabled: boolean;
  createdAt: number;
}

/** A user acting for a patient in another vault (a proxy, seed 004): what they may do there. */
export interface DelegationRecord {
  partition: string;
  username: string;
  /** Patient id inside `partition`. */
  patient: string;
  /** SMART system scopes bounding the delegate, e.g. `system/*.rs`. */
  scope: string;
  createdAt: number;
}

export interface UserStore {
  /** False when the username is taken. */
  insert(record: UserRecord): Promise<boolean>;
  get(username: string): Promise<UserRecord | undefined>;
  list(): Promise<UserRecord[]>;
  /** Changes a user's password hash or disabled flag; false when there is no such user. */
  update(username: string, changes: { passwordHash?: string; disabled?: boolean }): Promise<boolean>;
  /** Creates or replaces the delegation of one user for one patient. */
  putDelegation(record: DelegationRecord): Promise<void>;
  delegationsOf(username: string): Promise<DelegationRecord[]>;
  /** Removes a user and their delegations; false when there was no such user. */
  remove(username: string): Promise<boolean>;
  /** Ends one delegation; false when there was none. */
  removeDelegation(partition: string, username: string, patient: string): Promise<boolean>;
}

/** The current version of a resource: what a read serves and a write checks (no interaction name). */
export type CurrentVersion = Omit<StoredVersion, 'method'>;

/** A stored resource version; `content` is the JSON text exactly as served, absent for a deletion. */
export interface StoredVersion {
  type: string;
  id: string;
  version: number;
  lastUpdated: string;
  method: 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  content: string | undefined;
  /** Only on the version past a history page's `maxBytes`: its content's size, the content left unread. */
  size?: number;
}

export interface HistoryQuery {
  type?: string | undefined;
  id?: string | undefined;
  /** ISO instant: only versions updated at or after it. */
  since?: string | undefined;
  /**
   * `_at`: only versions current at some time between `endedAfter` and `beganBefore` (ISO instants): the version
   * was written before `beganBefore`, and the resource's next version (if any) after `endedAfter`.
   */
  at?: { beganBefore?: string | undefined; endedAfter?: string | undefined } | undefined;
  /** Exclusive upper bound, to page back in time with a stable cursor. */
  before?: { lastUpdated: string; type: string; id: string; version: number } | undefined;
  limit: number;
  /**
   * Bytes of content the page may hold (the first version always): the versions past it are left out but for
   * the first of them, which comes back with its `size` and without its content, so the caller sees there is
   * more. Either way a large version's content is read only if the page keeps it.
   */
  maxBytes?: number | undefined;
}

/** One write inside a transaction; the version and timestamp are decided by the caller. */
export interface ResourceWrite {
  type: string;
  id: string;
  version: number;
  lastUpdated: string;
  method: StoredVersion['method'];
  content: string | undefined;
  /** Index rows of the new current version; omitted for a deletion. */
  index?: IndexRows | undefined;
}

/** Small facts about the database itself (e.g. which search parameter definitions built its index). */
export interface MetaStore {
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
}

export interface ResourceTransaction {
  /**
   * The instant (ms since the epoch) a version written now is stamped with: one clock for every node that
   * shares the store, read under the write lock, so that versions' lastUpdated follow the order in which they
   * commit. A poller that resumes at the newest lastUpdated it saw (inclusive) misses nothing, whichever node
   * wrote, and whatever that node's own clock says.
   */
  now(): number;
  current(type: string, id: string): Promise<CurrentVersion | undefined>;
  /**
   * A hint that `current` of these resources follows (a transaction Bundle's updates): a store whose reads
   * are roundtrips reads them in one, and answers those `current` calls from it until the transaction writes
   * the resource. Stores with cheap reads need not implement it.
   */
  prefetch?(keys: { type: string; id: string }[]): Promise<void>;
  write(write: ResourceWrite): Promise<void>;
  /** Appends an AuditEvent in this same transaction: it commits with the data it describes, or not at all. */
  audit(record: AuditRecord): Promise<void>;
  /**
   * A search that sees this transaction's own writes and everything committed before it took the write lock,
   * for re-checking a condition (conditional create/update/delete) where no other writer can interleave.
   */
  search(query: SearchQuery): Promise<SearchResult>;
}

export interface ResourceStore {
  /** Current version (a deletion has no content), or undefined if the id never existed. */
  current(partition: string, type: string, id: string): Promise<CurrentVersion | undefined>;
  version(partition: string, type: string, id: string, version: number): Promise<StoredVersion | undefined>;
  /** Newest first. */
  history(partition: string, query: HistoryQuery): Promise<StoredVersion[]>;
  /** Current, undeleted resources matching the query in this partition only; `total` when asked. */
  search(partition: string, query: SearchQuery): Promise<SearchResult>;
  /**
   * Resources that `param` (undefined: any reference parameter) of the `sourceType` resources points to
   * (`_include`); at most `bound.limit` of them when given. Large contents are left unread (SizedResource), and
   * every content with `bound.contents: false`.
   */
  referencedBy(
    partition: string,
    sourceType: string,
    sourceIds: string[],
    param: string | undefined,
    targetType?: string,
    bound?: IncludeBound,
  ): Promise<SizedResource[]>;
  /**
   * Resources of `sourceType` (undefined: any type) whose `param` (undefined: any reference parameter) points to
   * one of `targets` (`_revinclude`); at most `bound.limit` of them when given. Large contents are left unread,
   * and every content with `bound.contents: false`.
   */
  referencing(
    partition: string,
    sourceType: string | undefined,
    param: string | undefined,
    targets: { type: string; id: string }[],
    bound?: IncludeBound,
  ): Promise<SizedResource[]>;
  /** Current, undeleted resources of the partition in (type, id) order after `after`: for rebuilding the index. */
  scan(partition: string, after: { type: string; id: string } | undefined, limit: number): Promise<ScannedResource[]>;
  /** The distinct profiles, tags and security labels of the current resources of `types`, at most `limit` each. */
  metaInUse(partition: string, types: readonly string[], limit: number): Promise<MetaInUse>;
  /**
   * Replaces the search index rows of current resources (after the search parameter definitions changed), under
   * the write lock; an item whose resource changed since it was scanned (another version) is left alone.
   */
  reindex(partition: string, items: { type: string; id: string; version: number; index: IndexRows }[]): Promise<number>;
  /**
   * Runs `fn` in one database transaction: all its writes commit together or not at all (a throw rolls
   * back). `fn` must await nothing but `tx` calls, so the embedded store can keep the transaction on one
   * connection without other requests interleaving. `fn` may run more than once (the embedded store runs a
   * group again, each in a savepoint, when one of them threw): only what it does through `tx` and what it
   * returns from its last run count, so it must not leave effects of its own outside (a value it sets again on
   * every run is fine).
   */
  transaction<T>(partition: string, fn: (tx: ResourceTransaction) => Promise<T>): Promise<T>;
  /**
   * An instant T (ms) such that every version stamped at or before T has committed, and every version that
   * commits later is stamped after T: a point in the store's time that a later `_lastUpdated=gtT` (or `_since`)
   * continues from without a gap. Waits for a write transaction in flight.
   */
  committedThrough(): Promise<number>;
}

export interface Store {
  readonly dialect: 'sqlite' | 'postgres';
  readonly clients: ClientStore;
  readonly trust: TrustStore;
  readonly partitions: PartitionStore;
  readonly users: UserStore;
  readonly audit: AuditStore;
  readonly resources: ResourceStore;
  readonly oidc: OidcPayloadStore;
  readonly revocations: RevocationStore;
  readonly meta: MetaStore;
  /** Deletes expired rows; safe to call at any time. */
  sweep(now: number): Promise<void>;
  /** Refreshes the planner statistics of every table now, whatever changed (after a bulk load). */
  analyze(): Promise<void>;
  /** Whether the database answers now (for /readyz); never throws. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}
