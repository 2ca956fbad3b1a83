import { createHash } from 'node:crypto';

/**
 * The search index of the audit trail (table audit_index): one (kind, value, seq) key per ref, nothing else —
 * the refs themselves live in the packed event, under its hash. Kinds are one letter, and a resource that is
 * both the patient and the entity of an event (a Patient read) is one key `pe`, found by both searches.
 * The index is derived, so `audit verify` checks it whole: a digest of every key it should hold against one of
 * every key it does.
 */
const LETTER: Record<string, string> = { patient: 'p', entity: 'e', agent: 'a' };

export interface IndexKey {
  kind: string;
  value: string;
}

export function indexKeys(refs: { kind: string; value: string }[]): IndexKey[] {
  const patients = new Set(refs.filter((r) => r.kind === 'patient').map((r) => r.value));
  const entities = new Set(refs.filter((r) => r.kind === 'entity').map((r) => r.value));
  const keys: IndexKey[] = [];
  for (const r of refs) {
    const both = patients.has(r.value) && entities.has(r.value);
    if (both && r.kind === 'entity') continue;
    keys.push({ kind: both ? 'pe' : (LETTER[r.kind] ?? r.kind), value: r.value });
  }
  return keys;
}

/**
 * The keys of rows written before refs were packed, from their audit_refs rows, by the same rule as indexKeys
 * (one `pe` key where a value is both patient and entity). Part of a migration on both engines: frozen text.
 */
export const INDEX_OLDER_REFS = `INSERT INTO audit_index (kind, value, seq)
    SELECT CASE kind WHEN 'patient' THEN 'p' WHEN 'entity' THEN 'e' WHEN 'agent' THEN 'a' ELSE kind END, value, seq
    FROM audit_refs;
  UPDATE audit_index SET kind = 'pe' WHERE kind = 'p' AND EXISTS (
    SELECT 1 FROM audit_index x WHERE x.kind = 'e' AND x.value = audit_index.value AND x.seq = audit_index.seq);
  DELETE FROM audit_index WHERE kind = 'e' AND EXISTS (
    SELECT 1 FROM audit_index x WHERE x.kind = 'pe' AND x.value = audit_index.value AND x.seq = audit_index.seq);
  DROP INDEX audit_refs_value;`;

/** The index kinds a search on a ref kind looks in. */
export function searchKinds(kind: 'patient' | 'agent' | 'entity'): string[] {
  return kind === 'agent' ? ['a'] : [LETTER[kind] as string, 'pe'];
}

/**
 * An order-independent digest of index keys: the sum of the first 60 bits of md5(seq|kind|value). PostgreSQL
 * computes the same sum in SQL (DIGEST_SQL); SQLite through this function.
 */
export function keyDigest(seq: number, kind: string, value: string): bigint {
  return BigInt(`0x${createHash('md5').update(`${seq}|${kind}|${value}`).digest('hex').slice(0, 15)}`);
}

export class IndexDigest {
  count = 0;
  sum = 0n;
  add(seq: number, keys: IndexKey[]): void {
    for (const k of keys) {
      this.count++;
      this.sum += keyDigest(seq, k.kind, k.value);
    }
  }
}
