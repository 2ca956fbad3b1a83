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

export interface Store {
  readonly dialect: 'sqlite' | 'postgres';
  readonly clients: ClientStore;
  readonly oidc: OidcPayloadStore;
  readonly revocations: RevocationStore;
  /** Deletes expired rows; safe to call at any time. */
  sweep(now: number): Promise<void>;
  close(): Promise<void>;
}
