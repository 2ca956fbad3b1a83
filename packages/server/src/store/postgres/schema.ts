import { INDEX_OLDER_REFS } from '../sql/audit-index.ts';

/**
 * PostgreSQL schema, one entry per version (applied in order under an advisory lock, recorded in
 * schema_migrations). Text that is compared or sorted uses the "C" collation, so that prefix ranges and
 * sort orders are byte-wise as in the SQLite store. The partition leads every key and index of a vault
 * table, so that a distributed PostgreSQL can shard by it (docs/scale-out.md).
 */
const T = 'text COLLATE "C"';

/** Vault tables: row-level security limits the vault role to the partition its transaction names. */
export const VAULT_TABLES = [
  'resources',
  'resource_versions',
  'idx_token',
  'idx_string',
  'idx_reference',
  'idx_date',
  'idx_number',
  'idx_quantity',
  'idx_uri',
  'idx_composite',
] as const;

/** The role vault transactions run as (SET LOCAL ROLE): not the owner, so row-level security applies to it. */
export const VAULT_ROLE = 'carevault_vault';

const idx = (name: string, columns: string) => `
  CREATE TABLE ${name} (
    partition ${T} NOT NULL, type ${T} NOT NULL, id ${T} NOT NULL, param ${T} NOT NULL, ${columns}
  );`;

export const MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'authorization server, vaults, search index, users, audit trail',
    sql: `
  CREATE TABLE clients (
    client_id  ${T} PRIMARY KEY,
    metadata   text NOT NULL,
    disabled   boolean NOT NULL DEFAULT false,
    created_at bigint NOT NULL
  );
  CREATE TABLE oidc_payloads (
    model       ${T} NOT NULL,
    id          ${T} NOT NULL,
    payload     text NOT NULL,
    grant_id    ${T},
    user_code   ${T},
    uid         ${T},
    expires_at  bigint,
    consumed_at bigint,
    PRIMARY KEY (model, id)
  );
  CREATE INDEX oidc_payloads_grant ON oidc_payloads (grant_id) WHERE grant_id IS NOT NULL;
  CREATE INDEX oidc_payloads_uid ON oidc_payloads (model, uid) WHERE uid IS NOT NULL;
  CREATE INDEX oidc_payloads_user_code ON oidc_payloads (model, user_code) WHERE user_code IS NOT NULL;
  CREATE INDEX oidc_payloads_expiry ON oidc_payloads (expires_at) WHERE expires_at IS NOT NULL;
  CREATE TABLE revoked_tokens (
    jti        ${T} PRIMARY KEY,
    expires_at bigint NOT NULL
  );

  CREATE TABLE partitions (
    name        ${T} PRIMARY KEY,
    account_urn ${T} UNIQUE,
    created_at  bigint NOT NULL
  );
  CREATE TABLE account_identifiers (
    partition ${T} NOT NULL REFERENCES partitions (name),
    value     ${T} NOT NULL UNIQUE,
    PRIMARY KEY (partition, value)
  );
  CREATE TABLE partition_grants (
    partition    ${T} NOT NULL REFERENCES partitions (name),
    subject_kind ${T} NOT NULL CHECK (subject_kind IN ('client', 'org')),
    subject      ${T} NOT NULL,
    scope        text NOT NULL,
    created_at   bigint NOT NULL,
    PRIMARY KEY (partition, subject_kind, subject)
  );
  CREATE INDEX partition_grants_subject ON partition_grants (subject_kind, subject);

  CREATE TABLE resources (
    partition    ${T} NOT NULL,
    type         ${T} NOT NULL,
    id           ${T} NOT NULL,
    version      integer NOT NULL,
    last_updated ${T} NOT NULL,
    content      text,
    PRIMARY KEY (partition, type, id)
  );
  CREATE INDEX resources_type_time ON resources (partition, type, last_updated, id);
  CREATE TABLE resource_versions (
    partition    ${T} NOT NULL,
    type         ${T} NOT NULL,
    id           ${T} NOT NULL,
    version      integer NOT NULL,
    last_updated ${T} NOT NULL,
    method       ${T} NOT NULL CHECK (method IN ('POST', 'PUT', 'PATCH', 'DELETE')),
    content      text,
    PRIMARY KEY (partition, type, id, version)
  );
  CREATE INDEX resource_versions_time ON resource_versions (partition, last_updated);
  CREATE INDEX resource_versions_type_time ON resource_versions (partition, type, last_updated);

  ${idx('idx_token', `system ${T}, code ${T}, text text`)}
  CREATE INDEX idx_token_value ON idx_token (partition, type, param, code, system);
  CREATE INDEX idx_token_owner ON idx_token (partition, type, id);
  ${idx('idx_string', `norm ${T} NOT NULL, exact ${T} NOT NULL`)}
  CREATE INDEX idx_string_value ON idx_string (partition, type, param, norm);
  CREATE INDEX idx_string_owner ON idx_string (partition, type, id);
  ${idx('idx_reference', `target_type ${T}, target_id ${T}, url ${T}`)}
  CREATE INDEX idx_reference_value ON idx_reference (partition, type, param, target_id, target_type);
  CREATE INDEX idx_reference_target ON idx_reference (partition, target_type, target_id);
  CREATE INDEX idx_reference_owner ON idx_reference (partition, type, id);
  ${idx('idx_date', 'lo double precision NOT NULL, hi double precision NOT NULL')}
  CREATE INDEX idx_date_value ON idx_date (partition, type, param, lo, hi);
  CREATE INDEX idx_date_owner ON idx_date (partition, type, id);
  ${idx('idx_number', 'value double precision NOT NULL')}
  CREATE INDEX idx_number_value ON idx_number (partition, type, param, value);
  CREATE INDEX idx_number_owner ON idx_number (partition, type, id);
  ${idx('idx_quantity', `value double precision NOT NULL, system ${T}, code ${T}`)}
  CREATE INDEX idx_quantity_value ON idx_quantity (partition, type, param, value);
  CREATE INDEX idx_quantity_owner ON idx_quantity (partition, type, id);
  ${idx('idx_uri', `value ${T} NOT NULL`)}
  CREATE INDEX idx_uri_value ON idx_uri (partition, type, param, value);
  CREATE INDEX idx_uri_owner ON idx_uri (partition, type, id);
  ${idx('idx_composite', `row integer NOT NULL, comp integer NOT NULL, system ${T}, code ${T}, num double precision, lo double precision, hi double precision`)}
  CREATE INDEX idx_composite_value ON idx_composite (partition, type, param, comp, code, system);
  CREATE INDEX idx_composite_row ON idx_composite (partition, type, id, param, row, comp);

  CREATE TABLE users (
    username      ${T} PRIMARY KEY,
    password_hash text NOT NULL,
    partition     ${T} REFERENCES partitions (name),
    fhir_user     ${T},
    disabled      boolean NOT NULL DEFAULT false,
    created_at    bigint NOT NULL
  );
  CREATE TABLE user_delegations (
    partition  ${T} NOT NULL REFERENCES partitions (name),
    username   ${T} NOT NULL REFERENCES users (username),
    patient    ${T} NOT NULL,
    scope      text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (partition, username, patient)
  );
  CREATE INDEX user_delegations_user ON user_delegations (username);

  -- One global chain; writers serialize on an advisory lock, so seq order is chain order on every node.
  CREATE TABLE audit_events (
    seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             ${T} NOT NULL UNIQUE,
    partition      ${T},
    recorded       bigint NOT NULL,
    type           ${T} NOT NULL,
    subtype        ${T},
    action         ${T},
    outcome        ${T} NOT NULL,
    request_id     ${T},
    correlation_id ${T},
    content        text NOT NULL,
    prev_hash      text NOT NULL,
    hash           text NOT NULL
  );
  CREATE INDEX audit_events_recorded ON audit_events (recorded);
  CREATE TABLE audit_refs (
    seq   bigint NOT NULL,
    kind  ${T} NOT NULL,
    value ${T} NOT NULL
  );
  CREATE INDEX audit_refs_value ON audit_refs (kind, value, seq);
  CREATE INDEX audit_refs_seq ON audit_refs (seq);

  DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${VAULT_ROLE}') THEN
      CREATE ROLE ${VAULT_ROLE} NOLOGIN;
    END IF;
  EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
  END $$;
  DO $$ BEGIN
    EXECUTE format('GRANT ${VAULT_ROLE} TO %I', current_user);
  EXCEPTION WHEN others THEN NULL; -- a superuser may SET ROLE without membership
  END $$;
  DO $$ BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO ${VAULT_ROLE}', current_schema());
  END $$;
  GRANT SELECT, INSERT, UPDATE, DELETE ON ${VAULT_TABLES.join(', ')} TO ${VAULT_ROLE};
  GRANT SELECT, INSERT ON audit_events, audit_refs TO ${VAULT_ROLE};
  ${VAULT_TABLES.map(
    (t) => `ALTER TABLE ${t} ENABLE ROW LEVEL SECURITY;
  CREATE POLICY vault_isolation ON ${t} USING (partition = current_setting('carevault.partition', true));`,
  ).join('\n  ')}
  `,
  },
  {
    version: 2,
    name: 'store_meta: facts about the database (search index generation)',
    sql: `CREATE TABLE store_meta (key ${T} PRIMARY KEY, value text NOT NULL);`,
  },
  {
    version: 3,
    name: 'trust_communities: network CAs whose certificate holders authenticate without registering',
    sql: `CREATE TABLE trust_communities (
      name ${T} PRIMARY KEY, ca_pem text NOT NULL, crl_pem text, scope text NOT NULL, created_at bigint NOT NULL);`,
  },
  {
    version: 4,
    name: 'audit_events.packed: events stored deflated against a dictionary (content keeps older rows)',
    sql: 'ALTER TABLE audit_events ADD COLUMN packed bytea;',
  },
  {
    version: 5,
    name: 'audit_checkpoint: the last pruned event, where the remaining chain continues',
    sql: `CREATE TABLE audit_checkpoint (
      one int PRIMARY KEY CHECK (one = 1), seq bigint NOT NULL, hash text NOT NULL, recorded bigint NOT NULL,
      pruned bigint NOT NULL, at bigint NOT NULL);
    GRANT SELECT ON audit_checkpoint TO ${VAULT_ROLE};`,
  },
  {
    version: 6,
    name: 'audit_index: refs move into the packed event; this is only their search index',
    sql: `CREATE TABLE audit_index (kind ${T} NOT NULL, value ${T} NOT NULL, seq bigint NOT NULL,
      PRIMARY KEY (kind, value, seq));
  ${INDEX_OLDER_REFS}
  GRANT SELECT, INSERT ON audit_index TO ${VAULT_ROLE};`,
  },
  {
    version: 7,
    name: 'resources: content above 2 KB compressed with lz4 where the server has it (pglz was 5 % of an ingest)',
    // Only values written from now on; older ones stay pglz and read as before. A server built without lz4
    // (or before PostgreSQL 14) keeps pglz.
    sql: `DO $$ BEGIN
      IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE resources ALTER COLUMN content SET COMPRESSION lz4;
        ALTER TABLE resource_versions ALTER COLUMN content SET COMPRESSION lz4;
      END IF;
    END $$;`,
  },
  {
    version: 8,
    name: 'version_clock: the newest lastUpdated stamped, so that a database clock set back cannot stamp earlier',
    // Starts empty (no scan of the versions): until the first write after this migration, stamps are the clock's.
    sql: `CREATE TABLE version_clock (one int PRIMARY KEY CHECK (one = 1), last_updated ${T} NOT NULL);
    INSERT INTO version_clock VALUES (1, '');
    GRANT SELECT, UPDATE ON version_clock TO ${VAULT_ROLE};`,
  },
  {
    version: 9,
    name: 'trust_communities.crl_url: where the CRL is published, fetched again by the server',
    sql: `ALTER TABLE trust_communities ADD COLUMN crl_url ${T};`,
  },
];
