import type pg from 'pg';
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
import type { ClientStore, OidcPayloadStore, TrustStore } from '../types.ts';
import { run, runCount } from './connection.ts';

const nowSeconds = () => Math.floor(Date.now() / 1000);

export function oidcStore(pool: pg.Pool): OidcPayloadStore {
  return {
    async upsert(model, id, payload, expiresAt, index) {
      await run(
        pool,
        `INSERT INTO oidc_payloads (model, id, payload, grant_id, user_code, uid, expires_at, consumed_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, NULL)
         ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
           user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at`,
        [
          model,
          id,
          JSON.stringify(payload),
          index.grantId ?? null,
          index.userCode ?? null,
          index.uid ?? null,
          expiresAt,
        ],
      );
    },
    async find(model, id) {
      const [row] = await run<PayloadRow>(
        pool,
        'SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE model = ? AND id = ?',
        [model, id],
        { prepared: true },
      );
      return toPayload(row, nowSeconds());
    },
    async findBy(model, column, value) {
      const col = column === 'uid' ? 'uid' : 'user_code';
      const [row] = await run<PayloadRow>(
        pool,
        `SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE model = ? AND ${col} = ? LIMIT 1`,
        [model, value],
      );
      return toPayload(row, nowSeconds());
    },
    async insertIfAbsent(model, id, expiresAt) {
      // One statement: of two nodes inserting the same id at once, exactly one sees a new row. An expired
      // row with the same id may be reused; a live one means "seen before".
      const n = await runCount(
        pool,
        `INSERT INTO oidc_payloads (model, id, payload, expires_at) VALUES (?, ?, '{}', ?)
         ON CONFLICT (model, id) DO UPDATE SET expires_at = excluded.expires_at, payload = '{}'
           WHERE oidc_payloads.expires_at <= ?`,
        [model, id, expiresAt, nowSeconds()],
        { prepared: true },
      );
      return n === 1;
    },
    async consume(model, id, at) {
      await run(pool, 'UPDATE oidc_payloads SET consumed_at = ? WHERE model = ? AND id = ?', [at, model, id]);
    },
    async destroy(model, id) {
      await run(pool, 'DELETE FROM oidc_payloads WHERE model = ? AND id = ?', [model, id]);
    },
    async revokeByGrantId(grantId) {
      await run(pool, 'DELETE FROM oidc_payloads WHERE grant_id = ?', [grantId]);
    },
    async grantsOfAccount(accountId) {
      const rows = await run<{ id: string; client_id: string; expires_at: number | null }>(
        pool,
        `SELECT id, payload::jsonb ->> 'clientId' AS client_id, expires_at FROM oidc_payloads
         WHERE model = 'Grant' AND payload::jsonb ->> 'accountId' = ? AND (expires_at IS NULL OR expires_at > ?)
         ORDER BY id`,
        [accountId, nowSeconds()],
      );
      return rows.map((r) => ({ grantId: r.id, clientId: r.client_id, expiresAt: r.expires_at }));
    },
  };
}

export function clientStore(pool: pg.Pool): ClientStore {
  return {
    async insert(record) {
      await run(pool, 'INSERT INTO clients (client_id, metadata, disabled, created_at) VALUES (?, ?, ?, ?)', [
        record.clientId,
        JSON.stringify(record.metadata),
        record.disabled,
        record.createdAt,
      ]);
    },
    async save(record) {
      await run(pool, CLIENT_SAVE_SQL, [
        record.clientId,
        JSON.stringify(record.metadata),
        record.disabled,
        record.createdAt,
      ]);
    },
    async get(clientId) {
      const [row] = await run<ClientRow>(pool, 'SELECT * FROM clients WHERE client_id = ?', [clientId], {
        prepared: true,
      });
      return row ? toClient(row) : undefined;
    },
    async list() {
      return (await run<ClientRow>(pool, 'SELECT * FROM clients ORDER BY client_id')).map(toClient);
    },
    async setDisabled(clientId, disabled) {
      return (await runCount(pool, 'UPDATE clients SET disabled = ? WHERE client_id = ?', [disabled, clientId])) === 1;
    },
  };
}

export function trustStore(pool: pg.Pool): TrustStore {
  return {
    async put(r) {
      await run(pool, TRUST_PUT_SQL, [r.name, r.caPem, r.crlPem ?? null, r.scope, r.createdAt, r.crlUrl ?? null]);
    },
    async setCrl(name, f) {
      return (await runCount(pool, TRUST_CRL_SQL, [f.crlPem, name, f.caPem, f.crlUrl])) === 1;
    },
    async get(name) {
      const [row] = await run<TrustRow>(pool, 'SELECT * FROM trust_communities WHERE name = ?', [name]);
      return row ? toTrust(row) : undefined;
    },
    async list() {
      return (await run<TrustRow>(pool, 'SELECT * FROM trust_communities ORDER BY name')).map(toTrust);
    },
    async remove(name) {
      return (await runCount(pool, 'DELETE FROM trust_communities WHERE name = ?', [name])) === 1;
    },
  };
}
