/** SQLite schema, applied idempotently at open. Versioned through PRAGMA user_version. */
import type Database from 'better-sqlite3';
import { INDEX_OLDER_REFS } from '../sql/audit-index.ts';

/**
 * A step of the schema: SQL, or code where SQLite's SQL cannot say "only if absent" (ADD COLUMN). Every step must
 * be repeatable: a database whose user_version was set back runs the later steps again.
 */
export type Migration = string | ((db: Database.Database) => void);

/** Adds a column unless the table has it. */
const addColumn = (table: string, column: string, type: string) => (db: Database.Database) => {
  const columns = db.prepare(`SELECT name FROM pragma_table_info('${table}')`).pluck().all() as string[];
  if (!columns.includes(column)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`);
};

export const MIGRATIONS: readonly Migration[] = [
  `
  CREATE TABLE IF NOT EXISTS clients (
    client_id  TEXT PRIMARY KEY,
    metadata   TEXT NOT NULL,
    disabled   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE IF NOT EXISTS oidc_payloads (
    model       TEXT NOT NULL,
    id          TEXT NOT NULL,
    payload     TEXT NOT NULL,
    grant_id    TEXT,
    user_code   TEXT,
    uid         TEXT,
    expires_at  INTEGER,
    consumed_at INTEGER,
    PRIMARY KEY (model, id)
  ) STRICT;
  CREATE INDEX IF NOT EXISTS oidc_payloads_grant ON oidc_payloads (grant_id) WHERE grant_id IS NOT NULL;
  CREATE INDEX IF NOT EXISTS oidc_payloads_uid ON oidc_payloads (model, uid) WHERE uid IS NOT NULL;
  CREATE INDEX IF NOT EXISTS oidc_payloads_user_code ON oidc_payloads (model, user_code) WHERE user_code IS NOT NULL;
  CREATE INDEX IF NOT EXISTS oidc_payloads_expiry ON oidc_payloads (expires_at) WHERE expires_at IS NOT NULL;

  CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
  ) STRICT;
  `,
  `
  -- Vaults: one partition per account (or named use case). Every FHIR table leads with the partition.
  CREATE TABLE IF NOT EXISTS partitions (
    name        TEXT PRIMARY KEY,
    account_urn TEXT UNIQUE,
    created_at  INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE IF NOT EXISTS account_identifiers (
    partition TEXT NOT NULL REFERENCES partitions (name),
    value     TEXT NOT NULL UNIQUE,
    PRIMARY KEY (partition, value)
  ) STRICT;
  CREATE TABLE IF NOT EXISTS partition_grants (
    partition    TEXT NOT NULL REFERENCES partitions (name),
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('client', 'org')),
    subject      TEXT NOT NULL,
    scope        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (partition, subject_kind, subject)
  ) STRICT;
  CREATE INDEX IF NOT EXISTS partition_grants_subject ON partition_grants (subject_kind, subject);

  -- Current version of each resource, JSON served as stored; content is NULL once deleted.
  CREATE TABLE IF NOT EXISTS resources (
    partition    TEXT NOT NULL,
    type         TEXT NOT NULL,
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    content      TEXT,
    PRIMARY KEY (partition, type, id)
  ) STRICT, WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS resource_versions (
    partition    TEXT NOT NULL,
    type         TEXT NOT NULL,
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    method       TEXT NOT NULL CHECK (method IN ('POST', 'PUT', 'PATCH', 'DELETE')),
    content      TEXT,
    PRIMARY KEY (partition, type, id, version)
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS resource_versions_time ON resource_versions (partition, last_updated);
  CREATE INDEX IF NOT EXISTS resource_versions_type_time ON resource_versions (partition, type, last_updated);
  `,
  `
  -- Search index of current versions. Every table: partition, type, id of the indexed resource, the
  -- SearchParameter code, the value; indexed both ways (value → resources and resource → values).
  CREATE TABLE IF NOT EXISTS idx_token (
    partition TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, code TEXT, text TEXT
  ) STRICT;
  CREATE INDEX IF NOT EXISTS idx_token_value ON idx_token (partition, type, param, code, system);
  CREATE INDEX IF NOT EXISTS idx_token_owner ON idx_token (partition, type, id);
  CREATE TABLE IF NOT EXISTS idx_string (
    partition TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    norm TEXT NOT NULL, exact TEXT NOT NULL
  ) STRICT;
  CREATE INDEX IF NOT EXISTS idx_string_value ON idx_string (partition, type, param, norm);
  CREATE INDEX IF NOT EXISTS idx_string_owner ON idx_string (partition, type, id);
  CREATE TABLE IF NOT EXISTS idx_reference (
    partition TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    target_type TEXT, target_id TEXT, url TEXT
  ) STRICT;
  CREATE INDEX IF NOT EXISTS idx_reference_value ON idx_reference (partition, type, param, target_id, target_type);
  CREATE INDEX IF NOT EXISTS idx_reference_target ON idx_reference (partition, target_type, target_id);
  CREATE INDEX IF NOT EXISTS idx_reference_owner ON idx_reference (partition, type, id);
  CREATE TABLE IF NOT EXISTS idx_date (
    partition TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    lo INTEGER NOT NULL, hi INTEGER NOT NULL
  ) STRICT;
  CREATE INDEX IF NOT EXISTS idx_date_value ON idx_date (partition, type, param, lo, hi);
  CREATE INDEX IF NOT EXISTS idx_date_owner ON idx_date (partition, type, id);
  CREATE TABLE IF NOT EXISTS idx_number (
    partition TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, value REAL NOT NULL
  ) STRICT;
  CREATE INDEX IF NOT EXISTS idx_number_value ON idx_number (partition, type, param, value);
  CREATE INDEX IF NOT EXISTS idx_number_owner ON idx_number (partition, type, id);
  CREATE TABLE IF NOT EXISTS idx_quantity (
    partition TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    value REAL NOT NULL, system TEXT, code TEXT
  ) STRICT;
  CREATE INDEX IF NOT EXISTS idx_quantity_value ON idx_quantity (partition, type, param, value);
  CREATE INDEX IF NOT EXISTS idx_quantity_owner ON idx_quantity (partition, type, id);
  CREATE TABLE IF NOT EXISTS idx_uri (
    partition TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL
  ) STRICT;
  CREATE INDEX IF NOT EXISTS idx_uri_value ON idx_uri (partition, type, param, value);
  CREATE INDEX IF NOT EXISTS idx_uri_owner ON idx_uri (partition, type, id);
  CREATE INDEX IF NOT EXISTS resources_type_time ON resources (partition, type, last_updated, id);
  `,
  `
  CREATE TABLE IF NOT EXISTS idx_composite (
    partition TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    row INTEGER NOT NULL, comp INTEGER NOT NULL,
    system TEXT, code TEXT, num REAL, lo INTEGER, hi INTEGER
  ) STRICT;
  CREATE INDEX IF NOT EXISTS idx_composite_value ON idx_composite (partition, type, param, comp, code, system);
  CREATE INDEX IF NOT EXISTS idx_composite_row ON idx_composite (partition, type, id, param, row, comp);
  `,
  `
  -- People who log in (SMART app launch). Users are global; what they reach is their own vault and delegations.
  CREATE TABLE IF NOT EXISTS users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    partition     TEXT REFERENCES partitions (name),
    fhir_user     TEXT,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE IF NOT EXISTS user_delegations (
    partition  TEXT NOT NULL REFERENCES partitions (name),
    username   TEXT NOT NULL REFERENCES users (username),
    patient    TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (partition, username, patient)
  ) STRICT;
  CREATE INDEX IF NOT EXISTS user_delegations_user ON user_delegations (username);
  `,
  `
  -- The audit trail (BALP AuditEvents). One global chain: each row's hash covers its content, its search
  -- columns and refs, and the previous row's hash, so altering or deleting a row breaks every later link.
  CREATE TABLE IF NOT EXISTS audit_events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    partition      TEXT,
    recorded       INTEGER NOT NULL,
    type           TEXT NOT NULL,
    subtype        TEXT,
    action         TEXT,
    outcome        TEXT NOT NULL,
    request_id     TEXT,
    correlation_id TEXT,
    content        TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
  ) STRICT;
  CREATE INDEX IF NOT EXISTS audit_events_recorded ON audit_events (recorded);
  CREATE TABLE IF NOT EXISTS audit_refs (
    seq   INTEGER NOT NULL,
    kind  TEXT NOT NULL,
    value TEXT NOT NULL
  ) STRICT;
  CREATE INDEX IF NOT EXISTS audit_refs_value ON audit_refs (kind, value, seq);
  CREATE INDEX IF NOT EXISTS audit_refs_seq ON audit_refs (seq);
  `,
  `
  CREATE TABLE IF NOT EXISTS store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
  ) STRICT;
  `,
  `
  CREATE TABLE IF NOT EXISTS trust_communities (
    name       TEXT PRIMARY KEY,
    ca_pem     TEXT NOT NULL,
    crl_pem    TEXT,
    scope      TEXT NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT;
  `,
  `
  -- Events are stored packed (store/sql/audit-packing.ts); content keeps the JSON of rows written before.
  ALTER TABLE audit_events ADD COLUMN packed BLOB;
  `,
  `
  -- The last pruned event (carevault audit prune): the remaining chain continues from its hash.
  CREATE TABLE IF NOT EXISTS audit_checkpoint (
    one      INTEGER PRIMARY KEY CHECK (one = 1),
    seq      INTEGER NOT NULL,
    hash     TEXT NOT NULL,
    recorded INTEGER NOT NULL,
    pruned   INTEGER NOT NULL,
    at       INTEGER NOT NULL
  ) STRICT;
  `,
  `
  -- Refs now live in the packed event (under its hash); audit_index is only the search index
  -- (store/sql/audit-index.ts). audit_refs keeps the refs of older rows, read by seq when verifying.
  CREATE TABLE IF NOT EXISTS audit_index (
    kind  TEXT NOT NULL,
    value TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    PRIMARY KEY (kind, value, seq)
  ) STRICT, WITHOUT ROWID;
  ${INDEX_OLDER_REFS}
  `,
  `
  -- The two commonest search conditions answered from an index alone: a candidate's code (token) checked without
  -- fetching its index rows one by one, a reference's owners listed without a row fetch each. The owner index
  -- keeps its leading columns, so deleting a resource's rows still uses it.
  CREATE INDEX IF NOT EXISTS idx_token_owner_value ON idx_token (partition, type, id, param, code, system);
  DROP INDEX IF EXISTS idx_token_owner;
  CREATE INDEX IF NOT EXISTS idx_reference_value_owner ON idx_reference (partition, type, param, target_id, target_type, id);
  DROP INDEX IF EXISTS idx_reference_value;
  `,
  `
  -- Resources and their versions as rowid tables, keyed by a unique index. Clustered (WITHOUT ROWID) on a random
  -- id, every write put a row of a few KB into the middle of a B-tree of a few rows per page: a page split and
  -- several pages rewritten into the WAL per resource. A rowid table appends the row and inserts one short key
  -- (docs/performance.md). Repeatable: a rerun copies the tables again.
  CREATE TABLE resources_rowid (
    partition    TEXT NOT NULL,
    type         TEXT NOT NULL,
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    content      TEXT
  ) STRICT;
  INSERT INTO resources_rowid (partition, type, id, version, last_updated, content)
    SELECT partition, type, id, version, last_updated, content FROM resources ORDER BY last_updated;
  DROP TABLE resources;
  ALTER TABLE resources_rowid RENAME TO resources;
  CREATE UNIQUE INDEX resources_key ON resources (partition, type, id);
  CREATE INDEX resources_type_time ON resources (partition, type, last_updated, id);
  CREATE TABLE resource_versions_rowid (
    partition    TEXT NOT NULL,
    type         TEXT NOT NULL,
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    method       TEXT NOT NULL CHECK (method IN ('POST', 'PUT', 'PATCH', 'DELETE')),
    content      TEXT
  ) STRICT;
  INSERT INTO resource_versions_rowid (partition, type, id, version, last_updated, method, content)
    SELECT partition, type, id, version, last_updated, method, content FROM resource_versions ORDER BY last_updated;
  DROP TABLE resource_versions;
  ALTER TABLE resource_versions_rowid RENAME TO resource_versions;
  CREATE UNIQUE INDEX resource_versions_key ON resource_versions (partition, type, id, version);
  CREATE INDEX resource_versions_time ON resource_versions (partition, last_updated);
  CREATE INDEX resource_versions_type_time ON resource_versions (partition, type, last_updated);
  `,
  // Where the community's CRL is published, when it was loaded from there: the server fetches it again.
  addColumn('trust_communities', 'crl_url', 'TEXT'),
];
