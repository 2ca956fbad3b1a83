import { CarevaultError } from '../../errors.js';
import type { FhirClient } from '../../fhir-client.js';
import type { Resource } from '../../fhir-types.js';
import { CARA } from './terminology.js';

/** Why a sync stopped before pushing anything; `code` is stable for scripts. */
export class ScpSyncError extends CarevaultError {
  constructor(
    readonly code:
      | 'no-care-plan'
      | 'several-care-plans'
      | 'no-care-team'
      | 'organization-not-in-team'
      | 'bad-observations'
      | 'bad-organization',
    message: string,
  ) {
    super(message);
  }
}

export interface ScpContext {
  carePlan: Resource;
  goals: Resource[];
  careTeam: Resource;
  organizations: Resource[];
}

interface Ref {
  reference?: string;
}

/**
 * Seed 000's context in **one** search: the active Shared Care Plan with its Goals, its CareTeam and the
 * team's member Organizations. Exactly one active CarePlan must exist.
 */
export async function loadContext(fhir: FhirClient): Promise<ScpContext> {
  const params: [string, string][] = [
    ['status', 'active'],
    ['_tag', `${CARA.namespace}|${CARA.scpTag}`],
    ['_include', 'CarePlan:goal'],
    ['_include', 'CarePlan:care-team'],
    ['_include:iterate', 'CareTeam:participant'],
  ];
  const resources: Resource[] = [];
  const matches: Resource[] = [];
  for await (const page of fhir.pages('CarePlan', params)) {
    for (const e of page.entry ?? []) {
      if (!e.resource) continue;
      resources.push(e.resource);
      if (e.search?.mode !== 'include' && e.resource.resourceType === 'CarePlan') matches.push(e.resource);
    }
  }
  if (matches.length === 0) throw new ScpSyncError('no-care-plan', 'the account has no active Shared Care Plan');
  if (matches.length > 1) {
    throw new ScpSyncError(
      'several-care-plans',
      `the account has ${matches.length} active Shared Care Plans (${matches.map((c) => `CarePlan/${c.id}`).join(', ')}); expected one`,
    );
  }
  const carePlan = matches[0] as Resource;
  const byRef = new Map(resources.map((r) => [`${r.resourceType}/${r.id}`, r]));
  const refOf = (r: Ref | undefined) => (r?.reference ? localRef(r.reference) : undefined);
  const goals = ((carePlan.goal as Ref[] | undefined) ?? [])
    .map((g) => byRef.get(refOf(g) ?? ''))
    .filter((g): g is Resource => g?.resourceType === 'Goal');
  const teamRef = ((carePlan.careTeam as Ref[] | undefined) ?? []).map(refOf).find(Boolean);
  const careTeam = teamRef ? byRef.get(teamRef) : undefined;
  if (!careTeam) throw new ScpSyncError('no-care-team', `CarePlan/${carePlan.id} has no CareTeam the search returned`);
  const organizations = ((careTeam.participant as { member?: Ref }[] | undefined) ?? [])
    .map((p) => byRef.get(refOf(p.member) ?? ''))
    .filter((o): o is Resource => o?.resourceType === 'Organization');
  return { carePlan, goals, careTeam, organizations };
}

/** `https://host/fhir/p/Goal/1` or `Goal/1/_history/2` → `Goal/1`. */
function localRef(reference: string): string {
  const m = /([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(reference);
  return m ? `${m[1]}/${m[2]}` : reference;
}

export interface OwnOrganization {
  /** A GLN (13 digits): matched against `urn:cara:gln` and GS1's `urn:oid:2.51.1.3`. */
  gln?: string | undefined;
  /** A CARA organization id, `urn:cara:org_id:<oid>` or the bare OID. */
  orgId?: string | undefined;
}

/**
 * The CareTeam member Organization that is this external system. The sources disagree on how it is identified
 * (domain.md inconsistency (a)): GLN in seed 000, CARA org id in the IG's HEAD and Postman; both work.
 */
export function findOwnOrganization(organizations: Resource[], own: OwnOrganization): Resource {
  if (!own.gln === !own.orgId) throw new ScpSyncError('bad-organization', 'give exactly one of a GLN or a CARA org id');
  if (own.gln !== undefined && !/^\d{13}$/.test(own.gln)) {
    throw new ScpSyncError('bad-organization', `GLN "${own.gln}" is not 13 digits`);
  }
  const orgOid = own.orgId?.replace(/^urn:cara:org_id:/, '');
  const matches = (i: { system?: string; value?: string }) => {
    if (own.gln) {
      return (i.system === CARA.gln || i.system === CARA.gs1Gln) && i.value?.replace(/^urn:cara:gln:/, '') === own.gln;
    }
    return i.system === CARA.orgId && i.value?.replace(/^urn:cara:org_id:/, '') === orgOid;
  };
  const found = organizations.find((o) =>
    ((o.identifier as { system?: string; value?: string }[]) ?? []).some(matches),
  );
  if (!found) {
    const what = own.gln ? `GLN ${own.gln}` : `org id urn:cara:org_id:${orgOid}`;
    throw new ScpSyncError(
      'organization-not-in-team',
      `no member Organization of the CareTeam has ${what} (members: ${organizations.map((o) => `Organization/${o.id}`).join(', ') || 'none'})`,
    );
  }
  return found;
}
