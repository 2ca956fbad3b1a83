import { randomBytes } from 'node:crypto';
import type { PartitionRecord, Store } from '../store/types.ts';

export class VaultInputError extends Error {}

/** Partition names appear in URLs (/fhir/{partition}) and token audiences, so they are kept URL-safe. */
export const PARTITION_RE = /^[A-Za-z0-9_-]{1,64}$/;
const ACCOUNT_URN_RE = /^urn:cara:account:([A-Za-z0-9_-]{1,64})$/;
const MPI_ID_RE = /^urn:cara:mpi_id:[0-2](\.(0|[1-9][0-9]*))+\/[0-9a-fA-F-]{8,64}$/;

export interface NewAccount {
  accountUrn?: string | undefined;
  mpiIds?: string[] | undefined;
}

/**
 * `carevault account add`: an account and its vault. The partition is the URN suffix
 * (`urn:cara:account:alice_1234` → `alice_1234`), as the seed's platform names vaults by Account URN.
 */
export async function addAccount(store: Store, input: NewAccount): Promise<{ accountUrn: string; partition: string }> {
  const accountUrn =
    input.accountUrn ?? `urn:cara:account:${randomBytes(9).toString('base64url').replace(/[-_]/g, 'x')}`;
  const m = ACCOUNT_URN_RE.exec(accountUrn);
  if (!m)
    throw new VaultInputError(
      `account URN "${accountUrn}" must look like urn:cara:account:<id> (id: A-Z a-z 0-9 _ -, at most 64)`,
    );
  for (const id of input.mpiIds ?? []) {
    if (!MPI_ID_RE.test(id)) throw new VaultInputError(`MPI id "${id}" must look like urn:cara:mpi_id:<oid>/<uuid>`);
  }
  const partition = m[1] as string;
  const created = await store.partitions.create({
    name: partition,
    accountUrn,
    identifiers: [...new Set(input.mpiIds ?? [])],
    createdAt: Math.floor(Date.now() / 1000),
  });
  if (!created) throw new VaultInputError(`account ${accountUrn}, its partition or one of its MPI ids already exists`);
  return { accountUrn, partition };
}

/** `carevault partition add <name>`: an extra vault for another use case, not tied to an account. */
export async function addPartition(store: Store, name: string): Promise<{ partition: string }> {
  if (!PARTITION_RE.test(name)) throw new VaultInputError('partition name must be 1-64 characters of A-Z a-z 0-9 _ -');
  const created = await store.partitions.create({
    name,
    accountUrn: undefined,
    identifiers: [],
    createdAt: Math.floor(Date.now() / 1000),
  });
  if (!created) throw new VaultInputError(`partition "${name}" already exists`);
  return { partition: name };
}

export function describePartition(p: PartitionRecord) {
  return {
    partition: p.name,
    accountUrn: p.accountUrn,
    mpiIds: p.identifiers,
    created_at: new Date(p.createdAt * 1000).toISOString(),
  };
}
