import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { ownerOnly } from '../../config/data-dir.ts';
import {
  CLIENT_SAVE_SQL,
  type ClientRow,
  type PayloadRow,
  TRUST_CRL_SQL,
  TRUST_PUT_SQL,
  type TrustRow,
  toClient,
  toPayload,
  toTrust,
} from '../sql/rows.ts';
import type { ClientStore, OidcPayloadStore, RevocationStore, Store, TrustStore } from '../types.ts';
import { auditStore, auditWriter } from './audit.ts';
import { type ForeignWrites, foreignWrites } from './foreign-writes.ts';
import { pageCachePolicy } from './page-cache.ts';
import { resourceStore } from './resources.ts';
import { MIGRATIONS, type Migration } from './schema.ts';
import { searchThreads } from './search-threads.ts';
import { userStore } from './users.ts';
import { partitionStore } from './vault.ts';

type Db = Database.Database;

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** Runs a write as a job of the group commit; resolves once it is committed. */
type Grouped = <T>(write: () => T) => Promise<T>;

function oidcStore(db: Db, grouped: Grouped): OidcPayloadStore {
  const upsert = db.prepare(
    `INSERT INTO oidc_payloads (model, id, payload, grant_id, user_code, uid, expires_at, consumed_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, NULL)
     ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
       user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at`,
  );
  const find = db.prepare('SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE model = ? AND id = ?');
  const findByUid = db.prepare(
    'SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE model = ? AND uid = ? LIMIT 1',
  );
  const findByUserCode = db.prepare(
    'SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE model = ? AND user_code = ? LIMIT 1',
  );
  const insertIfAbsent = db.prepare(
    `INSERT INTO oidc_payloads (model, id, payload, expires_at) VALUES (?, ?, '{}', ?)
     ON CONFLICT (model, id) DO UPDATE SET expires_at = excluded.expires_at, payload = '{}'
       WHERE oidc_payloads.expires_at <= ?`,
  );
  const consume = db.prepare('UPDATE oidc_payloads SET consumed_at = ? WHERE model = ? AND id = ?');
  const destroy = db.prepare('DELETE FROM oidc_payloads WHERE model = ? AND id = ?');
  const revokeByGrantId = db.prepare('DELETE FROM oidc_payloads WHERE grant_id = ?');
  const grantsOfAccount = db.prepare(
    `SELECT id, json_extract(payload, '$.clientId') AS client_id, expires_at FROM oidc_payloads
     WHERE model = 'Grant' AND json_extract(payload, '$.accountId') = ? AND (expires_at IS NULL OR expires_at > ?)
     ORDER BY id`,
  );
  return {
    async upsert(model, id, payload, expiresAt, index) {
      upsert.run(
        model,
        id,
        JSON.stringify(payload),
        index.grantId ?? null,
        index.userCode ?? null,
        index.uid ?? null,
        expiresAt,
      );
    },
    async find(model, id) {
      return toPayload(find.get(model, id) as PayloadRow | undefined, nowSeconds());
    },
    async findBy(model, column, value) {
      const stmt = column === 'uid' ? findByUid : findByUserCode;
      return toPayload(stmt.get(model, value) as PayloadRow | undefined, nowSeconds());
    },
    insertIfAbsent(model, id, expiresAt) {
      // An expired row with the same id may be reused; a live one means "seen before". Claimed in the group
      // commit (its own commit was ≈ 10 % of a private_key_jwt token's CPU): two claims of one id in a group
      // still see each other, and the caller hears "fresh" only once the claim is durable.
      return grouped(() => insertIfAbsent.run(model, id, expiresAt, nowSeconds()).changes === 1);
    },
    async consume(model, id, at) {
      consume.run(at, model, id);
    },
    async destroy(model, id) {
      destroy.run(model, id);
    },
    async revokeByGrantId(grantId) {
      revokeByGrantId.run(grantId);
    },
    async grantsOfAccount(accountId) {
      const rows = grantsOfAccount.all(accountId, nowSeconds()) as {
        id: string;
        client_id: string;
        expires_at: number | null;
      }[];
      return rows.map((r) => ({ grantId: r.id, clientId: r.client_id, expiresAt: r.expires_at }));
    },
  };
}

function clientStore(db: Db): ClientStore {
  const insert = db.prepare('INSERT INTO clients (client_id, metadata, disabled, created_at) VALUES (?, ?, ?, ?)');
  const get = db.prepare('SELECT * FROM clients WHERE client_id = ?');
  const list = db.prepare('SELECT * FROM clients ORDER BY client_id');
  const setDisabled = db.prepare('UPDATE clients SET disabled = ? WHERE client_id = ?');
  const save = db.prepare(CLIENT_SAVE_SQL);
  return {
    async insert(record) {
      insert.run(record.clientId, JSON.stringify(record.metadata), record.disabled ? 1 : 0, record.createdAt);
    },
    async save(record) {
      save.run(record.clientId, JSON.stringify(record.metadata), record.disabled ? 1 : 0, record.createdAt);
    },
    async get(clientId) {
      const row = get.get(clientId) as ClientRow | undefined;
      return row ? toClient(row) : undefined;
    },
    async list() {
      return (list.all() as ClientRow[]).map(toClient);
    },
    async setDisabled(clientId, disabled) {
      return setDisabled.run(disabled ? 1 : 0, clientId).changes === 1;
    },
  };
}

function trustStore(db: Db): TrustStore {
  const put = db.prepare(TRUST_PUT_SQL);
  const get = db.prepare('SELECT * FROM trust_communities WHERE name = ?');
  const list = db.prepare('SELECT * FROM trust_communities ORDER BY name');
  const remove = db.prepare('DELETE FROM trust_communities WHERE name = ?');
  const setCrl = db.prepare(TRUST_CRL_SQL);
  return {
    async put(r) {
      put.run(r.name, r.caPem, r.crlPem ?? null, r.scope, r.createdAt, r.crlUrl ?? null);
    },
    async setCrl(name, f) {
      return setCrl.run(f.crlPem, name, f.caPem, f.crlUrl).changes === 1;
    },
    async get(name) {
      const row = get.get(name) as TrustRow | undefined;
      return row ? toTrust(row) : undefined;
    },
    async list() {
      return (list.all() as TrustRow[]).map(toTrust);
    },
    async remove(name) {
      return remove.run(name).changes === 1;
    },
  };
}

function revocationStore(db: Db, foreign: ForeignWrites): RevocationStore {
  const revoke = db.prepare('INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING');
  const check = db.prepare('SELECT 1 FROM revoked_tokens WHERE jti = ?');
  // Asked for every token presented; revoked here (revoke below) or by another process (`carevault token revoke`).
  const known = foreign.cache<string, boolean>();
  return {
    async revoke(jti, expiresAt) {
      revoke.run(jti, expiresAt);
      known.set(jti, true);
    },
    async isRevoked(jti) {
      return known.get(jti, () => check.get(jti) !== undefined);
    },
  };
}

function createOwnerOnly(file: string): void {
  try {
    closeSync(openSync(file, 'wx', 0o600));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

export interface SqliteOptions {
  /** Threads that answer searches (search-threads.ts); 0: the server's own thread, without a time limit. */
  searchThreads?: number | undefined;
  /** ms a search may run on a search thread, and the searches of one transaction together. */
  searchTimeout?: number | undefined;
}

export function openSqliteStore(file: string, options: SqliteOptions = {}): Store {
  if (file !== ':memory:') {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    // SQLite gives the -wal and -shm files the database file's mode, so the file is created 0600 first.
    if (!existsSync(file)) createOwnerOnly(file);
    ownerOnly(file, `${file}-wal`, `${file}-shm`);
  }
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  // Every commit rewrites the pages it touched into the WAL (the trail's tail, its index leaves), and each
  // checkpoint copies the WAL back, with an fsync, on the committing request's turn. Checkpointing every 10,000
  // pages (≈ 40 MB of WAL) instead of SQLite's 1,000 copies a page rewritten by many commits once: ≈ 10–20 µs
  // less per audited request (measured with 60,000 events).
  db.pragma('wal_autocheckpoint = 10000');
  // The page cache's size and the memory map follow the database's size (page-cache.ts).
  const sizePageCache = pageCachePolicy(db);
  sizePageCache();
  const version = db.pragma('user_version', { simple: true }) as number;
  for (let v = version; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      const step = MIGRATIONS[v] as Migration;
      if (typeof step === 'string') db.exec(step);
      else step(db);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  // Planner statistics: refreshed at open and on every sweep, so search plans follow the data.
  db.pragma('analysis_limit = 1000');
  db.pragma('optimize=0x10002');
  const sweepPayloads = db.prepare('DELETE FROM oidc_payloads WHERE expires_at IS NOT NULL AND expires_at <= ?');
  const sweepRevoked = db.prepare('DELETE FROM revoked_tokens WHERE expires_at <= ?');
  const metaGet = db.prepare('SELECT value FROM store_meta WHERE key = ?');
  const metaSet = db.prepare(
    'INSERT INTO store_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
  );
  const metaDelete = db.prepare('DELETE FROM store_meta WHERE key = ?');
  const threads =
    file === ':memory:' || options.searchThreads === 0
      ? undefined
      : searchThreads(file, options.searchThreads ?? 2, options.searchTimeout ?? 30_000);
  const { resources, appendAudit, grouped } = resourceStore(db, auditWriter(db), threads, options.searchTimeout);
  const foreign = foreignWrites(db);
  return {
    dialect: 'sqlite',
    clients: clientStore(db),
    trust: trustStore(db),
    partitions: partitionStore(db, foreign),
    users: userStore(db),
    resources,
    audit: auditStore(db, appendAudit),
    oidc: oidcStore(db, grouped),
    revocations: revocationStore(db, foreign),
    meta: {
      async get(key) {
        return (metaGet.get(key) as { value: string } | undefined)?.value;
      },
      async set(key, value) {
        metaSet.run(key, value);
      },
      async delete(key) {
        metaDelete.run(key);
      },
    },
    async sweep(now) {
      sweepPayloads.run(now);
      sweepRevoked.run(now);
      db.pragma('optimize');
      sizePageCache();
    },
    async analyze() {
      // analysis_limit (above) keeps this to ~1,000 rows per index, whatever the database's size.
      db.exec('ANALYZE');
    },
    async ping() {
      try {
        return db.open && db.prepare('SELECT 1').get() !== undefined;
      } catch {
        return false;
      }
    },
    async close() {
      await threads?.close();
      if (db.open) db.close();
    },
  };
}
