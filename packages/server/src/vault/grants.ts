import { parseSmartScope, splitScope } from '../auth/smart-scopes.ts';
import type { GrantSubjectKind, Store } from '../store/types.ts';
import { VaultInputError } from './partitions.ts';

const OID_RE = /^[0-2](\.(0|[1-9][0-9]*))+$/;
export const GLN_RE = /^\d{13}$/;

/** A network client's id (seed 003): the FQDN its certificate was issued for. */
const FQDN_RE = /^(?=.{4,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$/;

/** How a grant's subject is shown: `client`, `org_oid`, `org_gln` or `community`. */
export function describeSubject(kind: GrantSubjectKind, subject: string): Record<string, string> {
  if (kind === 'client') return { client: subject };
  if (subject.startsWith('community:')) return { community: subject.slice('community:'.length) };
  return subject.startsWith('gln:') ? { org_gln: subject.slice(4) } : { org_oid: subject };
}

/**
 * `carevault grant add`: standing access of a client, or of every client of an organization, to one vault.
 * Grant scopes use the SMART system grammar; a request is allowed only where token and grant both permit it.
 */
export async function addGrant(
  store: Store,
  input: {
    partition: string;
    client?: string | undefined;
    orgOid?: string | undefined;
    orgGln?: string | undefined;
    community?: string | undefined;
    scope: string;
  },
) {
  if (!(await store.partitions.get(input.partition)))
    throw new VaultInputError(`partition "${input.partition}" not found`);
  const { subjectKind, subject } = subjectOf(input);
  const scopes = splitScope(input.scope);
  if (scopes.length === 0) throw new VaultInputError('--scope is required, e.g. "system/*.rs"');
  for (const s of scopes) {
    const parsed = parseSmartScope(s);
    if (parsed?.context !== 'system') {
      throw new VaultInputError(`grant scope "${s}" must be a SMART system scope such as system/Observation.cruds`);
    }
  }
  if (input.community && !(await store.trust.get(input.community)))
    throw new VaultInputError(`trust community "${input.community}" not found (see \`carevault trust list\`)`);
  if (subjectKind === 'client' && !(await store.clients.get(subject)) && !FQDN_RE.test(subject)) {
    // A network client has no record before its first token; its id is the FQDN of its certificate.
    throw new VaultInputError(`client "${subject}" not found (a network client is named by its FQDN)`);
  }
  await store.partitions.putGrant({
    partition: input.partition,
    subjectKind,
    subject,
    scope: scopes.join(' '),
    createdAt: Math.floor(Date.now() / 1000),
  });
  return { partition: input.partition, ...describeSubject(subjectKind, subject), scope: scopes.join(' ') };
}

/** Whom a grant names: exactly one of a client, an organization (OID or GLN) or a trust community. */
interface GrantSubjectInput {
  client?: string | undefined;
  orgOid?: string | undefined;
  orgGln?: string | undefined;
  community?: string | undefined;
}

function subjectOf(input: GrantSubjectInput): { subjectKind: GrantSubjectKind; subject: string } {
  if ([input.client, input.orgOid, input.orgGln, input.community].filter(Boolean).length !== 1)
    throw new VaultInputError('give exactly one of --client, --org-oid, --org-gln or --community');
  if (input.orgOid) {
    const subject = input.orgOid.replace(/^urn:oid:/, '');
    if (!OID_RE.test(subject)) throw new VaultInputError(`organization OID "${input.orgOid}" is not a dotted OID`);
    return { subjectKind: 'org', subject };
  }
  if (input.orgGln) {
    if (!GLN_RE.test(input.orgGln)) throw new VaultInputError(`GLN "${input.orgGln}" is not 13 digits`);
    return { subjectKind: 'org', subject: `gln:${input.orgGln}` };
  }
  if (input.community) return { subjectKind: 'org', subject: `community:${input.community}` };
  return { subjectKind: 'client', subject: input.client as string };
}

/**
 * `carevault grant remove`: ends the standing access of a client, organization or community to one vault. The
 * grant is looked up on every request, so tokens already issued stop reaching the vault at once (404, as any
 * vault the caller has no grant on), on every node.
 */
export async function removeGrant(store: Store, input: GrantSubjectInput & { partition: string }) {
  const { subjectKind, subject } = subjectOf(input);
  if (!(await store.partitions.removeGrant(input.partition, subjectKind, subject))) {
    const who = Object.entries(describeSubject(subjectKind, subject))[0]?.join(' ');
    throw new VaultInputError(`no grant of ${who} on partition "${input.partition}"`);
  }
  return { partition: input.partition, ...describeSubject(subjectKind, subject), removed: true };
}
