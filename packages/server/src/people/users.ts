import { grantContext } from '../auth/launch-context.ts';
import { parseSmartScope, splitScope } from '../auth/smart-scopes.ts';
import type { DelegationRecord, Store, UserRecord } from '../store/types.ts';
import { PARTITION_RE, VaultInputError } from '../vault/partitions.ts';
import { hashPassword } from './passwords.ts';

const USERNAME_RE = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/;
const FHIR_USER_RE = /^(Patient|Practitioner|PractitionerRole|RelatedPerson|Person)\/[A-Za-z0-9\-.]{1,64}$/;
const PATIENT_ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;
/** What a delegate may do unless told otherwise: read and search (a proxy reads a family member's record). */
export const DEFAULT_DELEGATION_SCOPE = 'system/*.rs';
/** What a user may do in their own vault. */
const OWNER_SCOPE = 'system/*.cruds';

/** `--account` takes the account URN (urn:cara:account:<id>) or the partition name itself. */
async function partitionOf(store: Store, account: string): Promise<string> {
  const name = account.startsWith('urn:cara:account:') ? account.slice('urn:cara:account:'.length) : account;
  const p = PARTITION_RE.test(name) ? await store.partitions.get(name) : undefined;
  if (!p || (account.startsWith('urn:') && p.accountUrn !== account)) {
    throw new VaultInputError(`account "${account}" not found (create it with: carevault account add --urn …)`);
  }
  return p.name;
}

export interface NewUser {
  username: string;
  password: string;
  account?: string | undefined;
  fhirUser?: string | undefined;
}

/** What a password must be, wherever one is set. */
export function checkNewPassword(password: string): void {
  if (password.length < 8) throw new VaultInputError('the password must have at least 8 characters');
  if (password.length > 1024) throw new VaultInputError('the password must have at most 1024 characters');
}

/** `carevault user password` and the account page: a new password (the old one stops working at once). */
export async function setPassword(store: Store, username: string, password: string) {
  checkNewPassword(password);
  if (!(await store.users.update(username, { passwordHash: await hashPassword(password) }))) {
    throw new VaultInputError(`user "${username}" not found`);
  }
  return { username, password: 'changed' };
}

/** `carevault user disable` / `enable`: a disabled user cannot sign in anywhere. */
export async function setUserDisabled(store: Store, username: string, disabled: boolean) {
  if (!(await store.users.update(username, { disabled }))) throw new VaultInputError(`user "${username}" not found`);
  return { username, disabled };
}

/** `carevault user add`: a person who logs in; their own vault is the account's. */
export async function addUser(store: Store, input: NewUser) {
  if (!USERNAME_RE.test(input.username)) {
    throw new VaultInputError(
      'username must be 1-128 characters of A-Z a-z 0-9 . _ @ + - and start with a letter or digit',
    );
  }
  checkNewPassword(input.password);
  if (input.fhirUser !== undefined && !FHIR_USER_RE.test(input.fhirUser)) {
    throw new VaultInputError('--fhir-user must be a relative reference such as Patient/123 or Practitioner/abc');
  }
  const partition = input.account === undefined ? undefined : await partitionOf(store, input.account);
  const record: UserRecord = {
    username: input.username,
    passwordHash: await hashPassword(input.password),
    partition,
    fhirUser: input.fhirUser,
    disabled: false,
    createdAt: Math.floor(Date.now() / 1000),
  };
  if (!(await store.users.insert(record))) throw new VaultInputError(`user "${input.username}" already exists`);
  return { username: record.username, partition, fhirUser: record.fhirUser };
}

/** `carevault user delegate`: lets a user act for a patient of another vault (seed 004 proxies). */
export async function delegate(
  store: Store,
  input: { username: string; account: string; patient: string; scope?: string | undefined },
) {
  if (!(await store.users.get(input.username))) throw new VaultInputError(`user "${input.username}" not found`);
  const partition = await partitionOf(store, input.account);
  const patient = input.patient.replace(/^Patient\//, '');
  if (!PATIENT_ID_RE.test(patient)) throw new VaultInputError('--patient must be a Patient id');
  const scopes = splitScope(input.scope ?? DEFAULT_DELEGATION_SCOPE);
  for (const s of scopes) {
    if (parseSmartScope(s)?.context !== 'system') {
      throw new VaultInputError(`delegation scope "${s}" must be a SMART system scope such as system/*.rs`);
    }
  }
  const record: DelegationRecord = {
    partition,
    username: input.username,
    patient,
    scope: scopes.join(' '),
    createdAt: Math.floor(Date.now() / 1000),
  };
  await store.users.putDelegation(record);
  return { username: record.username, partition, patient, scope: record.scope };
}

/**
 * `carevault user undelegate`: the user no longer acts for that patient. Their tokens for the patient stop at
 * once (the delegation is looked up on every request: vault/policy.ts).
 */
export async function undelegate(store: Store, input: { username: string; account: string; patient: string }) {
  const partition = await partitionOf(store, input.account);
  const patient = input.patient.replace(/^Patient\//, '');
  if (!(await store.users.removeDelegation(partition, input.username, patient))) {
    throw new VaultInputError(`user "${input.username}" has no delegation for Patient/${patient} in ${partition}`);
  }
  return { username: input.username, partition, patient, delegation: 'removed' };
}

/** One vault a user may reach: their own (any patient there) or a delegation (one patient). */
export interface VaultRight {
  partition: string;
  /** Patient the user acts for: their own fhirUser patient, or the delegated one. */
  patient: string | undefined;
  /** SMART system scopes bounding the user there. */
  scope: string;
  own: boolean;
}

export async function vaultRights(store: Store, username: string): Promise<VaultRight[]> {
  const user = await store.users.get(username);
  if (!user || user.disabled) return [];
  const rights: VaultRight[] = [];
  if (user.partition) {
    const patient = user.fhirUser?.startsWith('Patient/') ? user.fhirUser.slice('Patient/'.length) : undefined;
    rights.push({ partition: user.partition, patient, scope: OWNER_SCOPE, own: true });
  }
  for (const d of await store.users.delegationsOf(username)) {
    rights.push({ partition: d.partition, patient: d.patient, scope: d.scope, own: false });
  }
  return rights;
}

/** Which of a person's consents: those given to one app, one grant, or those for one record (a patient in a vault). */
export interface ConsentSelection {
  client?: string | undefined;
  grant?: string | undefined;
  record?: { partition: string; patient: string } | undefined;
}

/**
 * Withdraws a user's consents — every one, those given to one app (`client`), or one grant (`grant`): the grants,
 * their refresh tokens and codes go, and access tokens resting on them stop working at the FHIR server at once
 * (vault/policy.ts grantActive).
 */
export async function revokeConsents(store: Store, username: string, only: ConsentSelection = {}) {
  if (!(await store.users.get(username))) throw new VaultInputError(`user "${username}" not found`);
  const grants = [];
  for (const g of await store.oidc.grantsOfAccount(username)) {
    if ((only.client && g.clientId !== only.client) || (only.grant && g.grantId !== only.grant)) continue;
    if (only.record) {
      const context = await grantContext(store, g.grantId);
      if (context?.partition !== only.record.partition || context.patient !== only.record.patient) continue;
    }
    grants.push(g);
  }
  for (const g of grants) {
    await store.oidc.revokeByGrantId(g.grantId);
    await store.oidc.destroy('Grant', g.grantId);
  }
  return { username, revoked: grants.map((g) => ({ client_id: g.clientId, grant: g.grantId })) };
}
