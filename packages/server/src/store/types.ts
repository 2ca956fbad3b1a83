/**
 * The one storage interface. Async so that the PostgreSQL dialect can implement it unchanged;
 * nothing outside store/ writes SQL.
 */

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
}

export interface ClientStore {
  insert(record: ClientRecord): Promise<void>;
  get(clientId: string): Promise<ClientRecord | undefined>;
  list(): Promise<ClientRecord[]>;
  setDisabled(clientId: string, disabled: boolean): Promise<boolean>;
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
  /** Grants on `partition` held by the client or by its organization. */
  grantsFor(partition: string, clientId: string, orgOid: string | undefined): Promise<GrantRecord[]>;
  listGrants(partition?: string): Promise<GrantRecord[]>;
}

/** A stored resource version; `content` is the JSON text exactly as served, absent for a deletion. */
export interface StoredVersion {
  type: string;
  id: string;
  version: number;
  lastUpdated: string;
  method: 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  content: string | undefined;
}

export interface HistoryQuery {
  type?: string | undefined;
  id?: string | undefined;
  /** ISO instant: only versions updated at or after it. */
  since?: string | undefined;
  /** Exclusive upper bound, to page back in time with a stable cursor. */
  before?: { lastUpdated: string; type: string; id: string; version: number } | undefined;
  limit: number;
}

/** One write inside a transaction; the version and timestamp are decided by the caller. */
export interface ResourceWrite {
  type: string;
  id: string;
  version: number;
  lastUpdated: string;
  method: StoredVersion['method'];
  content: string | undefined;
}

export interface ResourceTransaction {
  current(type: string, id: string): Promise<StoredVersion | undefined>;
  write(write: ResourceWrite): Promise<void>;
}

export interface ResourceStore {
  /** Current version (a deletion has no content), or undefined if the id never existed. */
  current(partition: string, type: string, id: string): Promise<StoredVersion | undefined>;
  version(partition: string, type: string, id: string, version: number): Promise<StoredVersion | undefined>;
  /** Newest first. */
  history(partition: string, query: HistoryQuery): Promise<StoredVersion[]>;
  /**
   * Runs `fn` in one database transaction: all its writes commit together or not at all (a throw rolls
   * back). `fn` must await nothing but `tx` calls, so the embedded store can keep the transaction on one
   * connection without other requests interleaving.
   */
  transaction<T>(partition: string, fn: (tx: ResourceTransaction) => Promise<T>): Promise<T>;
}

export interface Store {
  readonly dialect: 'sqlite' | 'postgres';
  readonly clients: ClientStore;
  readonly partitions: PartitionStore;
  readonly resources: ResourceStore;
  readonly oidc: OidcPayloadStore;
  readonly revocations: RevocationStore;
  /** Deletes expired rows; safe to call at any time. */
  sweep(now: number): Promise<void>;
  close(): Promise<void>;
}
