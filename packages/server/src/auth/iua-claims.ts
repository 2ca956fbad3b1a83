import type { ClientPolicy } from './clients.ts';
import type { AssertedUserContext } from './user-context-claims.ts';

/** IHE IUA 3.71.4.2.2.1.1 claims, carried under `extensions.ihe_iua` of the access token. */
export interface IuaClaims {
  subject_organization_id?: string;
  subject_organization?: string;
  subject_role?: Coding[];
  purpose_of_use?: Coding[];
  subject_name?: string;
  /** The user's id as the seed's Epic mapping carries it (no IUA claim exists for it). */
  subject_id?: string;
}

interface Coding {
  system?: string;
  code: string;
}

const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';

/** "system|code", or a bare v3-ActReason code such as TREAT. */
export function toCoding(value: string, defaultSystem = ACT_REASON): Coding {
  const bar = value.lastIndexOf('|');
  return bar < 0 ? { system: defaultSystem, code: value } : { system: value.slice(0, bar), code: value.slice(bar + 1) };
}

export class PurposeOfUseError extends Error {}

/**
 * Builds the claims from the client's registration and the user context it asserted (already checked against
 * that registration). A requested purpose of use must be one the client is registered for; without a request
 * the first registered one applies.
 */
export function iuaClaims(
  policy: ClientPolicy,
  requestedPurpose: string | undefined,
  asserted?: AssertedUserContext,
): IuaClaims | undefined {
  if (asserted?.purpose_of_use) {
    if (requestedPurpose !== undefined)
      throw new PurposeOfUseError('purpose_of_use is given both as a parameter and in the client assertion');
    const [first] = asserted.purpose_of_use;
    requestedPurpose = first?.system ? `${first.system}|${first.code}` : first?.code;
  }
  const claims: IuaClaims = {};
  if (policy.orgOid) claims.subject_organization_id = `urn:oid:${policy.orgOid}`;
  if (policy.orgName) claims.subject_organization = policy.orgName;
  if (policy.roles?.length)
    claims.subject_role = policy.roles.map((r) => toCoding(r, 'urn:oid:2.16.840.1.113883.6.96'));
  const allowed = (policy.purposeOfUse ?? []).map((p) => toCoding(p));
  if (requestedPurpose !== undefined) {
    const wanted = toCoding(requestedPurpose);
    const match = allowed.find((c) => c.code === wanted.code && c.system === wanted.system);
    if (!match) throw new PurposeOfUseError(`purpose_of_use "${requestedPurpose}" is not registered for this client`);
    claims.purpose_of_use = [match];
  } else if (allowed[0]) {
    claims.purpose_of_use = [allowed[0]];
  }
  if (asserted) {
    const { purpose_of_use: _, ...user } = asserted;
    // An aggregator's user belongs to another organization: the registration's organization does not apply.
    if (user.subject_organization_id && user.subject_organization_id !== claims.subject_organization_id) {
      delete claims.subject_organization;
    }
    Object.assign(claims, user);
  }
  return Object.keys(claims).length > 0 ? claims : undefined;
}
