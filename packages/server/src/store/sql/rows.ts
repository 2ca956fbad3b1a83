import type {
  ClientRecord,
  CurrentVersion,
  DelegationRecord,
  GrantRecord,
  OidcPayloadRecord,
  StoredVersion,
  TrustCommunityRecord,
  UserRecord,
} from '../types.ts';

/**
 * Rows as both engines return them, and the records they become. Flags are 0/1 in SQLite and booleans in
 * PostgreSQL; everything else reads the same.
 */
type Flag = number | boolean;
const flag = (v: Flag) => v === true || v === 1;

export interface VersionRow {
  type: string;
  id: string;
  version: number;
  last_updated: string;
  method: StoredVersion['method'];
  content: string | null;
}

/** A current version is read from `resources` alone: the interaction that wrote it is only in its history row. */
export type CurrentRow = Omit<VersionRow, 'method'>;

export const toCurrent = (r: CurrentRow): CurrentVersion => ({
  type: r.type,
  id: r.id,
  version: r.version,
  lastUpdated: r.last_updated,
  content: r.content ?? undefined,
});

export const toVersion = (r: VersionRow): StoredVersion => ({
  type: r.type,
  id: r.id,
  version: r.version,
  lastUpdated: r.last_updated,
  method: r.method,
  content: r.content ?? undefined,
});

export interface UserRow {
  username: string;
  password_hash: string;
  partition: string | null;
  fhir_user: string | null;
  disabled: Flag;
  created_at: number;
}

export const toUser = (r: UserRow): UserRecord => ({
  username: r.username,
  passwordHash: r.password_hash,
  partition: r.partition ?? undefined,
  fhirUser: r.fhir_user ?? undefined,
  disabled: flag(r.disabled),
  createdAt: r.created_at,
});

export interface DelegationRow {
  partition: string;
  username: string;
  patient: string;
  scope: string;
  created_at: number;
}

export const toDelegation = (r: DelegationRow): DelegationRecord => ({
  partition: r.partition,
  username: r.username,
  patient: r.patient,
  scope: r.scope,
  createdAt: r.created_at,
});

export interface GrantRow {
  partition: string;
  subject_kind: 'client' | 'org';
  subject: string;
  scope: string;
  created_at: number;
}

export const toGrant = (r: GrantRow): GrantRecord => ({
  partition: r.partition,
  subjectKind: r.subject_kind,
  subject: r.subject,
  scope: r.scope,
  createdAt: r.created_at,
});

export interface ClientRow {
  client_id: string;
  metadata: string;
  disabled: Flag;
  created_at: number;
}

export const toClient = (row: ClientRow): ClientRecord => ({
  clientId: row.client_id,
  metadata: JSON.parse(row.metadata) as Record<string, unknown>,
  disabled: flag(row.disabled),
  createdAt: row.created_at,
});

export interface TrustRow {
  name: string;
  ca_pem: string;
  crl_pem: string | null;
  scope: string;
  created_at: number;
  crl_url: string | null;
}

export const toTrust = (row: TrustRow): TrustCommunityRecord => ({
  name: row.name,
  caPem: row.ca_pem,
  crlPem: row.crl_pem ?? undefined,
  crlUrl: row.crl_url ?? undefined,
  scope: row.scope,
  createdAt: Number(row.created_at),
});

export const CLIENT_SAVE_SQL = `INSERT INTO clients (client_id, metadata, disabled, created_at) VALUES (?, ?, ?, ?)
  ON CONFLICT (client_id) DO UPDATE SET metadata = excluded.metadata`;
export const TRUST_PUT_SQL = `INSERT INTO trust_communities (name, ca_pem, crl_pem, scope, created_at, crl_url)
  VALUES (?, ?, ?, ?, ?, ?)
  ON CONFLICT (name) DO UPDATE SET ca_pem = excluded.ca_pem, crl_pem = excluded.crl_pem, scope = excluded.scope,
    crl_url = excluded.crl_url`;
/** A newer CRL of a community, only while its CA is the one it was fetched for and it is newer than the stored one. */
export const TRUST_CRL_SQL = `UPDATE trust_communities SET crl_pem = ? WHERE name = ? AND ca_pem = ? AND crl_url = ?`;

export interface PayloadRow {
  payload: string;
  expires_at: number | null;
  consumed_at: number | null;
}

/** An oidc-provider payload, or undefined once expired (rows outlive their expiry until the next sweep). */
export function toPayload(row: PayloadRow | undefined, nowSeconds: number): OidcPayloadRecord | undefined {
  if (!row) return undefined;
  if (row.expires_at !== null && row.expires_at <= nowSeconds) return undefined;
  const payload = JSON.parse(row.payload) as Record<string, unknown>;
  if (row.consumed_at !== null) payload.consumed = row.consumed_at;
  return { payload, expiresAt: row.expires_at, consumed: row.consumed_at !== null };
}
