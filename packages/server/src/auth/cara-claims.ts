import type { ClientPolicy } from './clients.ts';

/**
 * The claims CARA's authorization server puts in a technical user's token (reference/domain.md §1.2), where the
 * client's registration provides them: organization (`cara:orgIdUrn` from the OID, `cara:gln`), `cara:roles`
 * (the role codes) and `cara:accountUrn`.
 */
export function caraClaims(policy: ClientPolicy): Record<string, unknown> {
  const claims: Record<string, unknown> = {};
  if (policy.orgOid) claims['cara:orgIdUrn'] = `urn:cara:org_id:${policy.orgOid}`;
  if (policy.orgGln) claims['cara:gln'] = policy.orgGln;
  if (policy.roles?.length) claims['cara:roles'] = policy.roles.map((r) => r.slice(r.lastIndexOf('|') + 1));
  if (policy.accountUrn) claims['cara:accountUrn'] = policy.accountUrn;
  return claims;
}
