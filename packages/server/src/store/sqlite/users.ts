import type Database from 'better-sqlite3';
import { type DelegationRow, toDelegation, toUser, type UserRow } from '../sql/rows.ts';
import type { UserStore } from '../types.ts';

export function userStore(db: Database.Database): UserStore {
  const insert = db.prepare(
    `INSERT INTO users (username, password_hash, partition, fhir_user, disabled, created_at)
     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
  );
  const get = db.prepare('SELECT * FROM users WHERE username = ?');
  const list = db.prepare('SELECT * FROM users ORDER BY username');
  const update = db.prepare(
    `UPDATE users SET password_hash = COALESCE(?, password_hash), disabled = COALESCE(?, disabled)
     WHERE username = ?`,
  );
  const putDelegation = db.prepare(
    `INSERT INTO user_delegations (partition, username, patient, scope, created_at) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (partition, username, patient) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at`,
  );
  const removeUser = db.transaction((username: string) => {
    db.prepare('DELETE FROM user_delegations WHERE username = ?').run(username);
    return db.prepare('DELETE FROM users WHERE username = ?').run(username).changes === 1;
  });
  const removeDelegation = db.prepare(
    'DELETE FROM user_delegations WHERE partition = ? AND username = ? AND patient = ?',
  );
  const delegationsOf = db.prepare('SELECT * FROM user_delegations WHERE username = ? ORDER BY partition, patient');
  return {
    async insert(u) {
      return (
        insert.run(u.username, u.passwordHash, u.partition ?? null, u.fhirUser ?? null, u.disabled ? 1 : 0, u.createdAt)
          .changes === 1
      );
    },
    async get(username) {
      const row = get.get(username) as UserRow | undefined;
      return row ? toUser(row) : undefined;
    },
    async list() {
      return (list.all() as UserRow[]).map(toUser);
    },
    async update(username, c) {
      const disabled = c.disabled === undefined ? null : c.disabled ? 1 : 0;
      return update.run(c.passwordHash ?? null, disabled, username).changes === 1;
    },
    async putDelegation(d) {
      putDelegation.run(d.partition, d.username, d.patient, d.scope, d.createdAt);
    },
    async remove(username) {
      return removeUser.immediate(username);
    },
    async removeDelegation(partition, username, patient) {
      return removeDelegation.run(partition, username, patient).changes === 1;
    },
    async delegationsOf(username) {
      return (delegationsOf.all(username) as DelegationRow[]).map(toDelegation);
    },
  };
}
