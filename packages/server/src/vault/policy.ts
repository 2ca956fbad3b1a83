import { grantContext } from '../auth/launch-context.ts';
import { type Permission, parseSmartScope, type SmartScope, splitScope, vaultScopes } from '../auth/smart-scopes.ts';
import { type AccessTokenClaims, OWN_ORGANIZATION_CLAIM } from '../auth/verifier.ts';
import { vaultRights } from '../people/users.ts';
import type { Store } from '../store/types.ts';
import { inPatientCompartment } from './compartment.ts';

/** FHIR interactions, each needing one SMART v2 permission letter. */
export type Interaction =
  | 'read'
  | 'vread'
  | 'history-instance'
  | 'history-type'
  | 'history-system'
  | 'search-type'
  | 'create'
  | 'update'
  | 'delete';

const PERMISSION: Record<Interaction, Permission> = {
  read: 'r',
  vread: 'r',
  'history-instance': 'r',
  'history-type': 's',
  'history-system': 's',
  'search-type': 's',
  create: 'c',
  update: 'u',
  delete: 'd',
};

/** What one request may do in one vault: the token's scopes and the vault's grants, both required. */
export interface VaultAccess {
  partition: string;
  clientId: string;
  tokenScopes: SmartScope[];
  grantScopes: SmartScope[];
  /**
   * A person's token (authorization code flow): its patient/ and user/ scopes apply, system/ scopes do not.
   * A technical user's token: only system/ scopes apply.
   */
  person: boolean;
  /** The patient of the launch context: patient/ scopes reach only this patient's compartment (I13, I14). */
  patient?: string | undefined;
  /**
   * A delegate (a proxy with no vault of their own here): user/ scopes too reach only the compartments of the
   * patients they act for — a delegation is for a patient, not for the vault that holds them.
   */
  onlyPatients?: string[] | undefined;
  /** EHR launch: the host whose grants bound the person (audited as the deciding rule). */
  host?: string | undefined;
  /** The grant (consent) a person's token rests on (audited as NEN 7513 toestemmingsprofiel). */
  grant?: string | undefined;
  /** A technical user's organizations as grant subjects (`organizationsOf`): its grants are looked up by them too. */
  organizations?: string[] | undefined;
  /** The OID of the organization a technical user is registered for (`clientOrganization`). */
  organizationOid?: string | undefined;
}

/**
 * One way a scope narrows access: to resources matching a granular query (`?category=…`, I11/I12), to the
 * launch patient's compartment, or both. A decision's restrictions are OR-ed: a resource is allowed when it
 * satisfies any of them.
 */
export interface Restriction {
  query?: string | undefined;
  patient?: string | undefined;
}

/** Allowed, possibly only for resources matching one of `restrictions`. */
export type Decision = { allowed: true; restrictions?: Restriction[] } | { allowed: false; reason: string };

/**
 * Whether the caller reaches the vault at all. No grant for its client or organization (or, for a person,
 * no own vault, delegation or EHR launch there) → undefined, and the caller must answer exactly as for a
 * vault that does not exist (404), so existence is not disclosed.
 */
export async function resolveVaultAccess(
  store: Store,
  partition: string,
  claims: AccessTokenClaims,
): Promise<VaultAccess | undefined> {
  const clientId = claims.client_id;
  if (!clientId) return undefined;
  const person = claims.extensions?.carevault;
  if (person) {
    if (person.vault !== undefined && person.vault !== partition) return undefined;
    if (!(await grantActive(store, claims))) return undefined;
    const patient = typeof claims.patient === 'string' ? claims.patient : undefined;
    let grantScopes: SmartScope[];
    let onlyPatients: string[] | undefined;
    if (person.host !== undefined) {
      // EHR launch: the EHR host vouched for its user; the user is bounded by what the host may do here.
      grantScopes = (await store.partitions.grantsFor(partition, person.host, [])).flatMap((g) => scopesOf(g.scope));
    } else {
      const rights = (await vaultRights(store, String(claims.sub))).filter((r) => r.partition === partition);
      grantScopes = rights.flatMap((r) => scopesOf(r.scope));
      if (!rights.some((r) => r.own)) {
        onlyPatients = rights.flatMap((r) => (r.patient === undefined ? [] : [r.patient]));
        // The delegation for the token's patient was withdrawn: the token reaches nothing here any more.
        if (patient !== undefined && !onlyPatients.includes(patient)) return undefined;
      }
    }
    if (grantScopes.length === 0) return undefined;
    return {
      partition,
      clientId,
      tokenScopes: scopesOf(claims.scope),
      grantScopes,
      person: true,
      patient,
      onlyPatients,
      host: person.host,
      grant: person.grant,
    };
  }
  const organizations = organizationsOf(claims);
  const grants = await store.partitions.grantsFor(partition, clientId, organizations);
  if (grants.length === 0) return undefined;
  return {
    partition,
    clientId,
    organizations,
    organizationOid: clientOrganization(claims),
    tokenScopes: cached(`t ${claims.scope ?? ''}`, () =>
      vaultScopes(claims.scope)
        .map(parseSmartScope)
        .filter((s): s is SmartScope => s !== undefined),
    ),
    grantScopes: grants.flatMap((g) => scopesOf(g.scope)),
    person: false,
  };
}

/**
 * A person's token rests on a grant (consent); a revoked grant (reused code or refresh token, consent
 * withdrawn) ends its self-contained tokens too. Technical users' tokens have no grant and are unaffected.
 */
export async function grantActive(store: Store, claims: AccessTokenClaims): Promise<boolean> {
  const person = claims.extensions?.carevault;
  if (!person) return true;
  return person.grant !== undefined && (await grantContext(store, person.grant)) !== undefined;
}

/**
 * The organization a technical user's token speaks for, as grant subjects: its IUA organization OID, the
 * GLN (`cara:gln`) when the client was registered with one, and its trust community (`carevault:community`).
 */
export function organizationsOf(claims: AccessTokenClaims): string[] {
  const out: string[] = [];
  const org = clientOrganization(claims);
  if (org) out.push(org);
  const gln = (claims as Record<string, unknown>)['cara:gln'];
  if (typeof gln === 'string') out.push(`gln:${gln}`);
  const community = (claims as Record<string, unknown>)['carevault:community'];
  if (typeof community === 'string') out.push(`community:${community}`);
  return out;
}

/**
 * The OID of the organization the client is registered for. A token naming a user of another organization (an
 * aggregator's, a SAML bearer assertion's) carries the client's own beside it (auth/provider.ts
 * `ownOrganization`): grants and the quality-data submission rule follow the client's, the audit the user's.
 */
export function clientOrganization(claims: AccessTokenClaims): string | undefined {
  const own = claims[OWN_ORGANIZATION_CLAIM];
  const org = typeof own === 'string' ? own : claims.extensions?.ihe_iua?.subject_organization_id;
  return typeof org === 'string' && org.startsWith('urn:oid:') ? org.slice('urn:oid:'.length) : undefined;
}

export function scopesOf(scope: string | undefined): SmartScope[] {
  return cached(`g ${scope ?? ''}`, () =>
    splitScope(scope)
      .map(parseSmartScope)
      .filter((s): s is SmartScope => s !== undefined),
  );
}

// The same few scope strings (a client's token, its grants) come with every request; parsing them again was
// ≈ 1 % of a read. Parsed scopes are never changed by their users, so one copy serves all.
const parsedScopes = new Map<string, SmartScope[]>();
function cached(key: string, parseNow: () => SmartScope[]): SmartScope[] {
  let scopes = parsedScopes.get(key);
  if (!scopes) {
    if (parsedScopes.size >= 1000) parsedScopes.clear();
    scopes = parseNow();
    parsedScopes.set(key, scopes);
  }
  return scopes;
}

const READS = new Set<Permission>(['r', 's']);

function covers(s: SmartScope, type: string, permission: Permission): boolean {
  return (s.resourceType === '*' || s.resourceType === type) && s.permissions.has(permission);
}

/** Which of the token's scopes count for this caller (see VaultAccess.person). */
function counts(access: VaultAccess, s: SmartScope): boolean {
  if (!access.person) return s.context === 'system';
  // B14: a patient scope without a patient context grants nothing.
  return s.context === 'user' || (s.context === 'patient' && access.patient !== undefined);
}

/** `type` is a resource type, or '*' for whole-vault interactions (which then need a wildcard scope). */
export function decide(access: VaultAccess, type: string, interaction: Interaction): Decision {
  const permission = PERMISSION[interaction];
  if (type === 'AuditEvent' && !READS.has(permission)) {
    // The audit trail is written by the server only (issue 5; NEN 7513 append-only).
    return { allowed: false, reason: 'AuditEvents are written by the server only' };
  }
  const reads = READS.has(permission) && type !== '*';
  const restrictions: Restriction[] = [];
  let unrestricted = false;
  for (const s of access.tokenScopes) {
    if (!counts(access, s) || !covers(s, type, permission)) continue;
    // patient/ scopes are bound to the launch patient, a delegate's user/ scopes to the patients delegated.
    const bound = s.context === 'patient' ? [access.patient as string] : access.onlyPatients;
    const patients = bound !== undefined && (type === '*' || inPatientCompartment(type)) ? bound : undefined;
    // Granular queries narrow reads and searches only; a write needs a scope without a query.
    if (s.query !== undefined && !reads) continue;
    if (patients === undefined && s.query === undefined) {
      unrestricted = true;
      break;
    }
    for (const patient of patients ?? [undefined]) restrictions.push({ query: s.query, patient });
  }
  if (!unrestricted && restrictions.length === 0) {
    return { allowed: false, reason: `the access token has no scope allowing ${interaction} of ${type}` };
  }
  if (!access.grantScopes.some((s) => s.context === 'system' && s.query === undefined && covers(s, type, permission))) {
    return {
      allowed: false,
      reason: access.person
        ? `the user may not ${interaction} ${type} in this vault`
        : `the grants of this vault do not allow ${interaction} of ${type} for this client`,
    };
  }
  return unrestricted ? { allowed: true } : { allowed: true, restrictions };
}

/** The patient whose compartment bounds writes of `type`, when the decision narrows them to one. */
export function writeCompartment(d: Decision): string | undefined {
  if (!d.allowed || !d.restrictions) return undefined;
  return d.restrictions.find((r) => r.patient !== undefined)?.patient;
}
