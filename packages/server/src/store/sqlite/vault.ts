import type Database from 'better-sqlite3';
import { type GrantRow, toGrant } from '../sql/rows.ts';
import type { GrantRecord, PartitionRecord, PartitionStore } from '../types.ts';
import type { ForeignWrites } from './foreign-writes.ts';

interface PartitionRow {
  name: string;
  account_urn: string | null;
  created_at: number;
}

export function partitionStore(db: Database.Database, foreign: ForeignWrites): PartitionStore {
  const insert = db.prepare(
    'INSERT INTO partitions (name, account_urn, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
  );
  const insertIdentifier = db.prepare(
    'INSERT INTO account_identifiers (partition, value) VALUES (?, ?) ON CONFLICT DO NOTHING',
  );
  const get = db.prepare('SELECT * FROM partitions WHERE name = ?');
  const list = db.prepare('SELECT * FROM partitions ORDER BY name');
  const identifiers = db.prepare('SELECT value FROM account_identifiers WHERE partition = ? ORDER BY value');
  const putGrant = db.prepare(
    `INSERT INTO partition_grants (partition, subject_kind, subject, scope, created_at) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (partition, subject_kind, subject) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at`,
  );
  const grantsFor = db.prepare(
    `SELECT * FROM partition_grants WHERE partition = ?
       AND ((subject_kind = 'client' AND subject = ?)
         OR (subject_kind = 'org' AND subject IN (SELECT value FROM json_each(?))))`,
  );
  const removeGrant = db.prepare(
    'DELETE FROM partition_grants WHERE partition = ? AND subject_kind = ? AND subject = ?',
  );
  const grantsOf = db.prepare('SELECT * FROM partition_grants WHERE partition = ? ORDER BY subject_kind, subject');
  const allGrants = db.prepare('SELECT * FROM partition_grants ORDER BY partition, subject_kind, subject');
  // Asked on every request; changed by `carevault grant` (another process) or putGrant here.
  const grantCache = foreign.cache<string, GrantRecord[]>();

  const create = db.transaction((r: PartitionRecord): boolean => {
    if (insert.run(r.name, r.accountUrn ?? null, r.createdAt).changes !== 1) return false;
    for (const value of r.identifiers) {
      if (insertIdentifier.run(r.name, value).changes !== 1) throw new DuplicateIdentifier();
    }
    return true;
  });
  const toPartition = (row: PartitionRow): PartitionRecord => ({
    name: row.name,
    accountUrn: row.account_urn ?? undefined,
    identifiers: (identifiers.all(row.name) as { value: string }[]).map((i) => i.value),
    createdAt: row.created_at,
  });

  const byIdentifier = db.prepare(
    'SELECT p.* FROM account_identifiers i JOIN partitions p ON p.name = i.partition WHERE i.value = ?',
  );
  const withPrefix = db.prepare('SELECT 1 FROM account_identifiers WHERE value >= ? AND value < ? LIMIT 1');
  return {
    async findByIdentifier(value) {
      const row = byIdentifier.get(value) as PartitionRow | undefined;
      return row ? toPartition(row) : undefined;
    },
    async hasIdentifierPrefix(prefix) {
      // A range scan on the unique index: every value starting with `prefix` sorts between these bounds.
      return withPrefix.get(prefix, `${prefix}\uffff`) !== undefined;
    },
    async create(record) {
      try {
        return create(record);
      } catch (err) {
        if (err instanceof DuplicateIdentifier || (err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE')
          return false;
        throw err;
      }
    },
    async get(name) {
      const row = get.get(name) as PartitionRow | undefined;
      return row ? toPartition(row) : undefined;
    },
    async list() {
      return (list.all() as PartitionRow[]).map(toPartition);
    },
    async putGrant(g) {
      putGrant.run(g.partition, g.subjectKind, g.subject, g.scope, g.createdAt);
      grantCache.clear();
    },
    async removeGrant(partition, subjectKind, subject) {
      const { changes } = removeGrant.run(partition, subjectKind, subject);
      grantCache.clear();
      return changes > 0;
    },
    async grantsFor(partition, clientId, organizations) {
      const orgs = JSON.stringify(organizations);
      return grantCache.get(JSON.stringify([partition, clientId, orgs]), () =>
        (grantsFor.all(partition, clientId, orgs) as GrantRow[]).map(toGrant),
      );
    },
    async listGrants(partition) {
      return ((partition ? grantsOf.all(partition) : allGrants.all()) as GrantRow[]).map(toGrant);
    },
  };
}

class DuplicateIdentifier extends Error {}
