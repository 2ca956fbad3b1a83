import { parseSmartScope, splitScope } from '../auth/smart-scopes.ts';
import type { GrantSubjectKind, Store } from '../store/types.ts';
import { VaultInputError } from './partitions.ts';

const OID_RE = /^[0-2](\.(0|[1-9][0-9]*))+$/;

/**
 * `carevault grant add`: standing access of a client, or of every client of an organization, to one vault.
 * Grant scopes use the SMART system grammar; a request is allowed only where token and grant both permit it.
 */
export async function addGrant(
  store: Store,
  input: { partition: string; client?: string | undefined; orgOid?: string | undefined; scope: string },
) {
  if (!input.client === !input.orgOid) throw new VaultInputError('give exactly one of --client or --org-oid');
  if (!(await store.partitions.get(input.partition)))
    throw new VaultInputError(`partition "${input.partition}" not found`);
  const scopes = splitScope(input.scope);
  if (scopes.length === 0) throw new VaultInputError('--scope is required, e.g. "system/*.rs"');
  for (const s of scopes) {
    const parsed = parseSmartScope(s);
    if (parsed?.context !== 'system') {
      throw new VaultInputError(`grant scope "${s}" must be a SMART system scope such as system/Observation.cruds`);
    }
  }
  let subjectKind: GrantSubjectKind = 'client';
  let subject = input.client as string;
  if (input.orgOid) {
    subjectKind = 'org';
    subject = input.orgOid.replace(/^urn:oid:/, '');
    if (!OID_RE.test(subject)) throw new VaultInputError(`organization OID "${input.orgOid}" is not a dotted OID`);
  } else if (!(await store.clients.get(subject))) {
    throw new VaultInputError(`client "${subject}" not found`);
  }
  await store.partitions.putGrant({
    partition: input.partition,
    subjectKind,
    subject,
    scope: scopes.join(' '),
    createdAt: Math.floor(Date.now() / 1000),
  });
  return {
    partition: input.partition,
    [subjectKind === 'client' ? 'client' : 'org_oid']: subject,
    scope: scopes.join(' '),
  };
}
