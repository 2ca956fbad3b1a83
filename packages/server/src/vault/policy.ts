import { type Permission, parseSmartScope, type SmartScope, splitScope } from '../auth/smart-scopes.ts';
import type { AccessTokenClaims } from '../auth/verifier.ts';
import type { Store } from '../store/types.ts';

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
}

/**
 * Allowed, possibly only for resources matching one of `restrictions` (the queries of granular SMART v2
 * scopes such as `system/Observation.rs?category=…|laboratory`, I11/I12).
 */
export type Decision = { allowed: true; restrictions?: string[] } | { allowed: false; reason: string };

/**
 * Whether the caller reaches the vault at all. No grant for its client or organization → undefined, and
 * the caller must answer exactly as for a vault that does not exist (404), so existence is not disclosed.
 */
export async function resolveVaultAccess(
  store: Store,
  partition: string,
  claims: AccessTokenClaims,
): Promise<VaultAccess | undefined> {
  const clientId = claims.client_id;
  if (!clientId) return undefined;
  const org = claims.extensions?.ihe_iua?.subject_organization_id;
  const orgOid = typeof org === 'string' ? org.replace(/^urn:oid:/, '') : undefined;
  const grants = await store.partitions.grantsFor(partition, clientId, orgOid);
  if (grants.length === 0) return undefined;
  return {
    partition,
    clientId,
    tokenScopes: parse(claims.scope),
    grantScopes: grants.flatMap((g) => parse(g.scope)),
  };
}

function parse(scope: string | undefined): SmartScope[] {
  return splitScope(scope)
    .map(parseSmartScope)
    .filter((s): s is SmartScope => s !== undefined);
}

const READS = new Set<Permission>(['r', 's']);

function applies(s: SmartScope, type: string, permission: Permission): boolean {
  // Patient and user scopes need a launch context, not issued to technical users yet: they never widen access.
  return s.context === 'system' && (s.resourceType === '*' || s.resourceType === type) && s.permissions.has(permission);
}

/** `type` is a resource type, or '*' for whole-vault interactions (which then need a wildcard scope). */
export function decide(access: VaultAccess, type: string, interaction: Interaction): Decision {
  const permission = PERMISSION[interaction];
  const token = access.tokenScopes.filter((s) => applies(s, type, permission));
  const unrestricted = token.some((s) => s.query === undefined);
  // Granular scopes narrow reads and searches only; writes need an unrestricted scope.
  const restrictions =
    READS.has(permission) && type !== '*' ? token.flatMap((s) => (s.query === undefined ? [] : [s.query])) : [];
  if (!unrestricted && restrictions.length === 0) {
    return { allowed: false, reason: `the access token has no scope allowing ${interaction} of ${type}` };
  }
  if (!access.grantScopes.some((s) => s.query === undefined && applies(s, type, permission))) {
    return {
      allowed: false,
      reason: `the grants of this vault do not allow ${interaction} of ${type} for this client`,
    };
  }
  return unrestricted ? { allowed: true } : { allowed: true, restrictions };
}
