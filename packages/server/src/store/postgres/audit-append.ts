import { createRequire } from 'node:module';
import type pg from 'pg';
import { storedHash } from '../sql/audit-chain.ts';
import type { AuditRecord } from '../types.ts';
import { auditCtes, chainRecords } from './audit.ts';
import { clean } from './connection.ts';
import { LOCK_WRITE } from './migrate.ts';
import { VAULT_ROLE } from './schema.ts';

// node-postgres' own serialisation of a parameter (arrays as array literals, bytea as \x hex): an EXECUTE in a
// simple query takes its parameters as text, and must read them exactly as a bound parameter would.
const { prepareValue } = createRequire(import.meta.url)('pg/lib/utils.js') as { prepareValue(v: unknown): unknown };

/**
 * What this node knows of the audit chain's head: the hash it committed last, and whether another node had
 * appended after it when this node last looked (then the head it knows is likely stale again next time).
 */
export interface KnownHead {
  hash?: string;
  contended: boolean;
}

/** The chain's head now (newest event, or the checkpoint when all were pruned), as stored. */
const HEAD = `COALESCE((SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1), (SELECT hash FROM audit_checkpoint))`;

/** Appends events chained onto the head given as $1 (stored form) or $2 (hex), and only if it is the head. */
const STATEMENT = 'cv_audit_after';
const PREPARE = `PREPARE ${STATEMENT} AS WITH ${auditCtes(2, `${HEAD} IN ($1, $2)`).join(',\n  ')}
SELECT count(*) AS appended FROM e`;

/** Connections on which the statement is prepared (a session object: it lives as long as the connection). */
const prepared = new WeakSet<pg.PoolClient>();

/**
 * Commits audit events (reads', searches', tokens': no data) in one roundtrip when this node knows the chain's
 * head: lock, append after that head, commit — one simple query. The group commit otherwise needs three (begin
 * and read the head under the lock; append; commit), and for a node under read load those roundtrips were
 * most of what a read cost it beyond the read itself. Guarded: when another node appended since, the head is
 * not the one given, nothing is appended (the empty transaction commits) and the answer is false — the caller
 * then takes the long way. Whatever happens, no event is appended onto a head that is not the chain's.
 */
export async function appendAfterKnownHead(
  client: pg.PoolClient,
  records: AuditRecord[],
  known: KnownHead,
): Promise<boolean> {
  if (known.hash === undefined || known.contended || records.length === 0) return false;
  const chained = chainRecords(known.hash, records);
  const args = clean([storedHash(known.hash), known.hash, ...chained.params]).map((v) =>
    v === null || v === undefined ? 'NULL' : client.escapeLiteral(String(prepareValue(v))),
  );
  const fresh = !prepared.has(client);
  const sql = `${fresh ? `${PREPARE}; ` : ''}BEGIN; SELECT pg_advisory_xact_lock(${LOCK_WRITE}); SET LOCAL ROLE ${VAULT_ROLE}; SET LOCAL synchronous_commit TO off; EXECUTE ${STATEMENT}(${args.join(', ')}); COMMIT`;
  let results: pg.QueryResult[];
  try {
    results = (await client.query(sql)) as unknown as pg.QueryResult[];
  } catch {
    // Refused inside the transaction: undo it (when the connection is gone, this throws and the group fails
    // whole); the long way then appends the same events, or reports why it cannot.
    await client.query('ROLLBACK');
    if (fresh) await client.query(`DEALLOCATE ${STATEMENT}`).catch(() => {});
    known.contended = true;
    return false;
  }
  prepared.add(client);
  const appended = Number(results.find((r) => r.fields?.[0]?.name === 'appended')?.rows[0]?.appended ?? 0);
  if (appended !== records.length) {
    known.contended = true;
    return false;
  }
  known.hash = chained.head;
  return true;
}
