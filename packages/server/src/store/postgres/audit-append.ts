import type pg from 'pg';
import type { AuditRecord } from '../types.ts';
import { auditCtes, tailedRecords } from './audit.ts';
import { clean } from './connection.ts';
import { sqlLiteral } from './literal.ts';
import { LOCK_WRITE } from './migrate.ts';
import { VAULT_ROLE } from './schema.ts';

/** Appends events chained by PostgreSQL onto the chain's head as it finds it (auditCtes, 'database'). */
const STATEMENT = 'cv_audit_chained';
const PREPARE = `PREPARE ${STATEMENT} AS WITH RECURSIVE ${auditCtes(0, 'database').join(',\n  ')}
SELECT count(*) AS appended FROM e`;

/** Connections on which the statement is prepared (a session object: it lives as long as the connection). */
const prepared = new WeakSet<pg.PoolClient>();

/**
 * Commits audit events (reads', searches', tokens': no data) in one roundtrip: lock, chain each event onto its
 * predecessor and the first onto whatever the chain's head is under the lock, append, commit — one simple
 * query, whichever node appended last. PostgreSQL computes the hashes from each event's chain tail, exactly as
 * chainHash does, so `audit verify` checks them as any other.
 *
 * Until 2026-12-04 a node chained the events itself onto the head it had committed last, with a guard, and took
 * three roundtrips under the lock (begin and read the head; append; commit) whenever another node had appended
 * in between: with read load on two nodes that was nearly every group, each holding the lock for ≥ 6 ms.
 * Returns false (nothing appended, the transaction undone) when PostgreSQL refuses the statement; the caller
 * then takes the long way, which appends the same events or reports why it cannot.
 */
export async function appendChained(client: pg.PoolClient, records: AuditRecord[]): Promise<boolean> {
  // An EXECUTE in a simple query takes its parameters as text.
  const args = clean(tailedRecords(records)).map(sqlLiteral);
  const fresh = !prepared.has(client);
  const sql = `${fresh ? `${PREPARE}; ` : ''}BEGIN; SELECT pg_advisory_xact_lock(${LOCK_WRITE}); SET LOCAL ROLE ${VAULT_ROLE}; SET LOCAL synchronous_commit TO off; EXECUTE ${STATEMENT}(${args.join(', ')}); COMMIT`;
  let results: pg.QueryResult[];
  try {
    results = (await client.query(sql)) as unknown as pg.QueryResult[];
  } catch {
    // Refused inside the transaction: undo it (when the connection is gone, this throws and the group fails
    // whole).
    await client.query('ROLLBACK');
    if (fresh) await client.query(`DEALLOCATE ${STATEMENT}`).catch(() => {});
    return false;
  }
  prepared.add(client);
  const appended = Number(results.find((r) => r.fields?.[0]?.name === 'appended')?.rows[0]?.appended ?? 0);
  return appended === records.length;
}
