/** SQLite schema, applied idempotently at open. Versioned through PRAGMA user_version. */
export const SCHEMA_VERSION = 1;

export const MIGRATIONS: readonly string[] = [
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
];
