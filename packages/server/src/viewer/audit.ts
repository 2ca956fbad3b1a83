import { BSN_SYSTEM, plainOid, SNOMED, type SourceQueryRecord } from '@carevault/sdk';
import { DCM, EVENT, type Outcome } from '../audit/balp.ts';
import type { AuditInput } from '../audit/trail.ts';

function outcomeOf(r: SourceQueryRecord): Outcome {
  if (r.result.status !== 'error') return '0';
  return r.result.http !== undefined && r.result.http < 500 ? '4' : '8';
}

/**
 * NEN 7513 at the viewer: one event per source query naming the professional (with role and organization), the
 * patient by BSN, the source system (Destination) and the request ids the source logged under the same
 * correlation id (cf. the Zorgviewer IG's AuditEvent example: DCM 110110, action R).
 */
export function sourceQueryEvent(r: SourceQueryRecord): AuditInput {
  const p = r.professional;
  const org = plainOid(p.organizationOid);
  let address: string | undefined;
  try {
    address = new URL(r.source.fhirBase).host;
  } catch {
    address = undefined;
  }
  return {
    type: EVENT.patientRecord,
    subtype: EVENT.query,
    action: 'R',
    outcome: outcomeOf(r),
    outcomeDesc: `${r.source.name}: ${r.result.status}${r.result.error ? ` (${r.result.error.slice(0, 200)})` : ''}`,
    who: {
      clientId: r.source.clientId,
      orgOid: org,
      orgName: p.organizationName,
      user: { id: p.id, issuer: `urn:oid:${org}`, display: p.name },
      roles: [{ system: SNOMED, code: p.role }],
      requestId: r.requestIds[0],
      correlationId: r.correlationId,
    },
    clientRole: '110150',
    agents: [
      {
        type: { coding: [{ system: DCM, code: '110152', display: 'Destination Role ID' }] },
        who: { identifier: { value: `urn:oid:${r.source.organizationOid}` }, display: r.source.name },
        requestor: false,
        ...(address ? { network: { address, type: '1' as const } } : {}),
      },
    ],
    entities: [
      {
        what: { identifier: { system: BSN_SYSTEM, value: r.bsn } },
        type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' },
        role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' },
      },
      {
        what: { display: r.source.fhirBase },
        type: {
          system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type',
          code: '2',
          display: 'System Object',
        },
        role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '24', display: 'Query' },
        detail: [
          { type: 'status', valueString: r.result.status },
          { type: 'count', valueString: String(r.result.count) },
          ...(r.result.truncated ? [{ type: 'truncated', valueString: 'true' }] : []),
          ...r.requestIds.slice(0, 50).map((id) => ({ type: 'X-Request-Id', valueString: id })),
        ],
      },
    ],
  };
}

const VIEWER_SUBTYPE = 'https://carevault.dev/fhir/CodeSystem/viewer-event';

/** Who is looking, as the viewer's own events name them (user, role, organization, session via). */
export function professionalWho(
  p: {
    id: string;
    role: string;
    organizationOid: string;
    name?: string | undefined;
    organizationName?: string | undefined;
  },
  ids: { address?: string | undefined; requestId?: string | undefined; correlationId?: string | undefined },
): AuditInput['who'] {
  const org = plainOid(p.organizationOid);
  return {
    user: { id: p.id, issuer: `urn:oid:${org}`, display: p.name },
    roles: [{ system: SNOMED, code: p.role }],
    orgOid: org,
    orgName: p.organizationName,
    ...ids,
  };
}

const bsnEntity = (bsn: string) => ({
  what: { identifier: { system: BSN_SYSTEM, value: bsn } },
  type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' },
  role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' },
});

/** A launch into the viewer (SAML or SMART): Login on success, Security Alert when a check refused it. */
export function launchEvent(
  outcome: { ok: true; via: string; bsn: string } | { ok: false; via: string; reason: string },
  who: AuditInput['who'],
): AuditInput {
  return {
    type: outcome.ok ? EVENT.login : EVENT.securityAlert,
    subtype: { system: VIEWER_SUBTYPE, code: 'launch', display: 'Viewer launch' },
    action: 'E',
    outcome: outcome.ok ? '0' : '4',
    outcomeDesc: outcome.ok ? `launch via ${outcome.via}` : `launch via ${outcome.via} refused: ${outcome.reason}`,
    who,
    clientRole: '110150',
    entities: outcome.ok ? [bsnEntity(outcome.bsn)] : [],
  };
}

/** Every page view and sign-out of a session (NEN 7513: who looked at which patient's page). */
export function sessionEvent(kind: 'page-view' | 'sign-out', bsn: string, who: AuditInput['who']): AuditInput {
  return {
    type: kind === 'page-view' ? EVENT.patientRecord : EVENT.login,
    subtype: { system: VIEWER_SUBTYPE, code: kind, display: kind === 'page-view' ? 'Page view' : 'Sign-out' },
    action: kind === 'page-view' ? 'R' : 'E',
    outcome: '0',
    who,
    clientRole: '110150',
    entities: [bsnEntity(bsn)],
  };
}
