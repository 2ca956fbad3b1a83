import { isValidBsn, plainOid } from '@carevault/sdk';

/** The IdP profiles of seed 001 ("Opstarten zorgviewer": Chipsoft Zorgplatform and Topicus VIPLive). */
export const PROFILES = ['zorgplatform', 'viplive'] as const;
export type IdpProfile = (typeof PROFILES)[number];

export const ATTR = {
  role: 'urn:oasis:names:tc:xacml:2.0:subject:role',
  organization: 'urn:oasis:names:tc:xspa:1.0:subject:organization-id',
  purposeOfUse: 'urn:oasis:names:tc:xspa:1.0:subject:purposeofuse',
  resourceId: 'urn:oasis:names:tc:xacml:1.0:resource:resource-id',
  workflowId: 'http://sts.zorgplatform.online/ws/claims/2017/07/workflow/workflow-id',
  name: 'http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name',
  professionalInitials: 'professional.initials',
  professionalFamily: 'professional.family_name',
  clientInitials: 'client.initials',
  clientFamily: 'client.family_name',
  clientBirthdate: 'client.birthdate',
  clientBsn: 'client.bsn',
} as const;

const SNOMED_OID = '2.16.840.1.113883.6.96';
const OID_RE = /^[0-2](\.(0|[1-9][0-9]*))+$/;

/** What a launch tells the viewer, whichever way it came in (the seed's Summary Table, one row per item). */
export interface LaunchContext {
  practitioner: { id: string; role: string; name?: string | undefined };
  organizationOid: string;
  /** Known at once (VIPLive, Zorgplatform resource-id), or found through the workflow's Task (Zorgplatform). */
  patient: { bsn?: string | undefined; name?: string | undefined; birthDate?: string | undefined };
  workflowId?: string | undefined;
  purposeOfUse?: string | undefined;
}

/** Why a launch was refused; the message is safe to show (it names the rule, never internals). */
export class LaunchRefused extends Error {}

type Attributes = Record<string, unknown>;

function text(value: unknown): string | undefined {
  if (typeof value === 'string') return value.trim() || undefined;
  if (Array.isArray(value)) return value.length === 1 ? text(value[0]) : undefined;
  if (value && typeof value === 'object' && typeof (value as { _?: unknown })._ === 'string') {
    return ((value as { _: string })._ as string).trim() || undefined;
  }
  return undefined;
}

/** An HL7v3 `<Role code=… codeSystem=…/>` inside the AttributeValue (xml2js shape), whatever its prefix. */
function hl7Role(value: unknown): { code?: string; codeSystem?: string } | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v || typeof v !== 'object') return undefined;
  for (const [k, child] of Object.entries(v)) {
    if (k === '$' || k === '_' || !/(^|:)Role$/.test(k)) continue;
    const attrs = (Array.isArray(child) ? child[0] : child)?.$ as Record<string, string> | undefined;
    if (attrs) return { code: attrs.code, codeSystem: attrs.codeSystem };
  }
  return undefined;
}

/** A role must be a SNOMED CT code: an HL7v3 Role with the SNOMED OID, or a bare code. */
function role(value: unknown): string {
  const element = hl7Role(value);
  if (element) {
    if (element.codeSystem !== SNOMED_OID) {
      throw new LaunchRefused(`role code system ${element.codeSystem ?? '(none)'} is not SNOMED CT (${SNOMED_OID})`);
    }
    if (!element.code || !/^\d{6,18}$/.test(element.code)) throw new LaunchRefused('role is not a SNOMED CT code');
    return element.code;
  }
  const code = text(value);
  if (!code || !/^\d{6,18}$/.test(code)) throw new LaunchRefused('role is missing or not a SNOMED CT code');
  return code;
}

function organization(value: unknown): string {
  const oid = plainOid(text(value) ?? '');
  if (!OID_RE.test(oid)) throw new LaunchRefused('organization-id is missing or not an OID');
  return oid;
}

function bsn(value: string | undefined): string {
  // Zorgplatform sends the HL7v2 CX form: 999911120^^^&2.16.840.1.113883.2.4.6.3&ISO.
  const v = value?.split('^')[0]?.trim();
  if (!v || !isValidBsn(v))
    throw new LaunchRefused('Deze patiënt heeft een ongeldig of nog niet gevalideerd BSN nummer');
  return v;
}

function practitionerId(nameId: string | undefined): string {
  if (!nameId || !/^[\x21-\x3A\x3C-\x7E]{1,64}$/.test(nameId)) throw new LaunchRefused('NameID is missing or unusable');
  return nameId;
}

/**
 * The seed's attribute tables, the one home for them: the viewer's SAML launch and the authorization server's
 * SAML 2.0 bearer grant both map an assertion through here.
 */
export function mapAssertion(profile: IdpProfile, nameId: string | undefined, attrs: Attributes): LaunchContext {
  const common = {
    practitioner: { id: practitionerId(nameId), role: role(attrs[ATTR.role]) },
    organizationOid: organization(attrs[ATTR.organization]),
  };
  if (profile === 'viplive') {
    const given = text(attrs[ATTR.professionalInitials]);
    const family = text(attrs[ATTR.professionalFamily]);
    const birth = text(attrs[ATTR.clientBirthdate]);
    if (birth !== undefined && !/^\d{8}$/.test(birth)) throw new LaunchRefused('client.birthdate is not YYYYMMDD');
    const patientName = [text(attrs[ATTR.clientInitials]), text(attrs[ATTR.clientFamily])].filter(Boolean).join(' ');
    return {
      ...common,
      practitioner: { ...common.practitioner, name: [given, family].filter(Boolean).join(' ') || undefined },
      patient: {
        bsn: bsn(text(attrs[ATTR.clientBsn])),
        name: patientName || undefined,
        birthDate: birth ? `${birth.slice(0, 4)}-${birth.slice(4, 6)}-${birth.slice(6, 8)}` : undefined,
      },
    };
  }
  const workflowId = text(attrs[ATTR.workflowId]);
  const resource = text(attrs[ATTR.resourceId]);
  if (!workflowId && !resource) throw new LaunchRefused('neither a patient (resource-id) nor a workflow-id was given');
  if (workflowId !== undefined && !/^[A-Za-z0-9._:-]{1,128}$/.test(workflowId))
    throw new LaunchRefused('workflow-id is not a plain identifier');
  return {
    ...common,
    practitioner: { ...common.practitioner, name: text(attrs[ATTR.name]) },
    patient: { bsn: resource ? bsn(resource) : undefined },
    workflowId,
    purposeOfUse: text(attrs[ATTR.purposeOfUse]),
  };
}
