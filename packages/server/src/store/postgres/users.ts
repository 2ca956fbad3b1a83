import type pg from 'pg';
import { type DelegationRow, toDelegation, toUser, type UserRow } from '../sql/rows.ts';
import type { UserStore } from '../types.ts';
import { run, runCount } from './connection.ts';

export function userStore(pool: pg.Pool): UserStore {
  return {
    async insert(u) {
      const n = await runCount(
        pool,
        `INSERT INTO users (username, password_hash, partition, fhir_user, disabled, created_at)
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
        [u.username, u.passwordHash, u.partition ?? null, u.fhirUser ?? null, u.disabled, u.createdAt],
      );
      return n === 1;
    },
    async get(username) {
      const [row] = await run<UserRow>(pool, 'SELECT * FROM users WHERE username = ?', [username]);
      return row ? toUser(row) : undefined;
    },
    async list() {
      return (await run<UserRow>(pool, 'SELECT * FROM users ORDER BY username')).map(toUser);
    },
    async update(username, c) {
      const n = await runCount(
        pool,
        `UPDATE users SET password_hash = COALESCE(?, password_hash), disabled = COALESCE(?, disabled)
         WHERE username = ?`,
        [c.passwordHash ?? null, c.disabled ?? null, username],
      );
      return n === 1;
    },
    async putDelegation(d) {
      await run(
        pool,
        `INSERT INTO user_delegations (partition, username, patient, scope, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (partition, username, patient) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at`,
        [d.partition, d.username, d.patient, d.scope, d.createdAt],
      );
    },
    async remove(username) {
      // One statement: the delegations and the user go together or not at all.
      const [row] = await run<{ n: string }>(
        pool,
        `WITH d AS (DELETE FROM user_delegations WHERE username = ?), u AS (DELETE FROM users WHERE username = ? RETURNING 1)
         SELECT COUNT(*) AS n FROM u`,
        [username, username],
      );
      return Number(row?.n) === 1;
    },
    async removeDelegation(partition, username, patient) {
      const n = await runCount(
        pool,
        'DELETE FROM user_delegations WHERE partition = ? AND username = ? AND patient = ?',
        [partition, username, patient],
      );
      return n === 1;
    },
    async delegationsOf(username) {
      return (
        await run<DelegationRow>(
          pool,
          'SELECT * FROM user_delegations WHERE username = ? ORDER BY partition, patient',
          [username],
        )
      ).map(toDelegation);
    },
  };
}
