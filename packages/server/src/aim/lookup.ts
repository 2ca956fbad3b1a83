import type { AccessTokenClaims } from '../auth/verifier.ts';
import type { PartitionRecord, Store } from '../store/types.ts';
import { resolveVaultAccess } from '../vault/policy.ts';

/** Scopes that allow identifier lookups: CARA's AIM reader scope and IHE PIXm's transaction scope (K08). */
export const AIM_SCOPES = ['ns:cara:authx.Reader', 'ITI-83'];
const MPI_PREFIX = 'urn:cara:mpi_id:';
const MPI_RE = /^urn:cara:mpi_id:([0-2](?:\.(?:0|[1-9][0-9]*))+)\/([0-9a-fA-F-]{8,64})$/;

export type LookupResult =
  | { found: true; account: PartitionRecord }
  | { found: false; reason: 'malformed' | 'unknown-domain' | 'unknown-id' };

/** `urn:oid:<oid>|<id>` (PIXm sourceIdentifier) → `urn:cara:mpi_id:<oid>/<id>`. */
export function mpiIdFromToken(sourceIdentifier: string): string | undefined {
  const m = /^urn:oid:([0-2](?:\.(?:0|[1-9][0-9]*))+)\|([0-9a-fA-F-]{8,64})$/.exec(sourceIdentifier);
  return m ? `${MPI_PREFIX}${m[1]}/${m[2]}` : undefined;
}

/** The MPI identifiers of an account as PIXm identifiers (system urn:oid:…, value id). */
export function asIdentifier(mpiId: string): { system: string; value: string } | undefined {
  const m = MPI_RE.exec(mpiId);
  return m ? { system: `urn:oid:${m[1]}`, value: m[2] as string } : undefined;
}

/**
 * MPI id → account (seed 000's AIM). A caller only learns accounts whose vault it may reach (a grant for its
 * client or organization); any other account is reported exactly like an unknown id.
 */
export async function lookupAccount(store: Store, claims: AccessTokenClaims, mpiIdUrn: string): Promise<LookupResult> {
  const m = MPI_RE.exec(mpiIdUrn);
  if (!m) return { found: false, reason: 'malformed' };
  const account = await store.partitions.findByIdentifier(mpiIdUrn);
  if (account && (await resolveVaultAccess(store, account.name, claims))) return { found: true, account };
  if (!(await store.partitions.hasIdentifierPrefix(`${MPI_PREFIX}${m[1]}/`))) {
    return { found: false, reason: 'unknown-domain' };
  }
  return { found: false, reason: 'unknown-id' };
}
