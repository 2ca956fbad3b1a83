import { randomFillSync } from 'node:crypto';
import type { AuditEvent, AuditEventAgent, AuditEventEntity, Coding } from 'fhir/r4.js';
import type { AuditRecord } from '../store/types.ts';

/**
 * BALP-shaped AuditEvents (IHE Basic Audit Log Patterns 1.1, ITI-71/102 audit, NEN 7513 fields).
 * One builder for every kind of event, so the same who/where/outcome shape is used everywhere.
 */

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const REST = 'http://hl7.org/fhir/restful-interaction';
const EVENT_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-event-type';
const IHE_EVENT = 'urn:ihe:event-type-code';
const ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
const BALP_ENTITY = 'https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType';
const BALP_AGENT = 'https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes';
const NEN7513 = 'https://carevault.dev/fhir/StructureDefinition/nen7513';

const code = (system: string, c: string, display?: string): Coding => ({
  system,
  code: c,
  ...(display ? { display } : {}),
});
const key = (c: Coding) => `${c.system}|${c.code}`;

export { DCM };

export const EVENT = {
  rest: code(EVENT_TYPE, 'rest', 'RESTful Operation'),
  securityAlert: code(DCM, '110113', 'Security Alert'),
  userAuthentication: code(DCM, '110114', 'User Authentication'),
  query: code(DCM, '110112', 'Query'),
  export: code(DCM, '110106', 'Export'),
  patientRecord: code(DCM, '110110', 'Patient Record'),
  login: code(DCM, '110122', 'Login'),
  iti71: code(IHE_EVENT, 'ITI-71', 'Get Access Token'),
  iti102: code(IHE_EVENT, 'ITI-102', 'Introspect Token'),
  iti83: code(IHE_EVENT, 'ITI-83', 'Mobile Patient Identifier Cross-reference Query'),
  rest_: (interaction: string) => code(REST, interaction),
  securityAttributesChanged: code(DCM, '110137', 'User Security Attributes Changed'),
  auditLogUsed: code(DCM, '110101', 'Audit Log Used'),
  consentGiven: code('https://carevault.dev/fhir/CodeSystem/audit-subtype', 'consent-given', 'Consent given'),
  consentWithdrawn: code(
    'https://carevault.dev/fhir/CodeSystem/audit-subtype',
    'consent-withdrawn',
    'Consent withdrawn',
  ),
  passwordChanged: code('https://carevault.dev/fhir/CodeSystem/audit-subtype', 'password-changed', 'Password changed'),
  userDisabled: code('https://carevault.dev/fhir/CodeSystem/audit-subtype', 'user-disabled', 'User disabled'),
  userEnabled: code('https://carevault.dev/fhir/CodeSystem/audit-subtype', 'user-enabled', 'User enabled'),
  userRemoved: code('https://carevault.dev/fhir/CodeSystem/audit-subtype', 'user-removed', 'User removed'),
  delegationEnded: code('https://carevault.dev/fhir/CodeSystem/audit-subtype', 'delegation-ended', 'Delegation ended'),
  grantAdded: code('https://carevault.dev/fhir/CodeSystem/audit-subtype', 'grant-added', 'Vault grant added'),
  grantRemoved: code('https://carevault.dev/fhir/CodeSystem/audit-subtype', 'grant-removed', 'Vault grant removed'),
} as const;

/** Who acted: the caller as the token and the connection describe it. */
export interface AuditWho {
  clientId?: string | undefined;
  orgOid?: string | undefined;
  orgName?: string | undefined;
  /** The person behind the token (authorization code flow) or the user logging in. */
  user?:
    | { id: string; issuer?: string | undefined; display?: string | undefined; fhirUser?: string | undefined }
    | undefined;
  roles?: Coding[] | undefined;
  purposeOfUse?: Coding[] | undefined;
  /** The token's jti (never the token). */
  tokenId?: string | undefined;
  address?: string | undefined;
  requestId?: string | undefined;
  correlationId?: string | undefined;
  /** User headers the client sent without a signature backing them (seed 001 `X-ZV-*`, `AORTA-ID`): its claim only. */
  claimed?: [string, string][] | undefined;
  /** The user came from a verified, signed `X-ZV-Context`. */
  userContext?: 'verified' | undefined;
}

/** NEN 7513 fields beyond BALP: which rule allowed the access, the consent it rests on, the care relation. */
export interface Nen7513 {
  autorisatieprotocol?: string | undefined;
  toestemmingsprofiel?: string | undefined;
  behandelrelatieprotocol?: string | undefined;
}

export type Outcome = '0' | '4' | '8' | '12';

export interface EventInput {
  type: Coding;
  subtype?: Coding | undefined;
  action?: 'C' | 'R' | 'U' | 'D' | 'E' | undefined;
  outcome: Outcome;
  outcomeDesc?: string | undefined;
  who: AuditWho;
  /** The client's role for this interaction (BALP): Source (110153), Destination (110152) or Application (110150). */
  clientRole: '110150' | '110152' | '110153';
  partition?: string | undefined;
  patients?: string[] | undefined;
  /** Data objects (Type/id or Type/id/_history/v). */
  objects?: string[] | undefined;
  /** Raw query (search, token request without secrets), recorded base64 as BALP asks. */
  query?: { raw: string; description?: string | undefined } | undefined;
  /** Extra entities, e.g. the access token's jti in an ITI-71 event. */
  entities?: AuditEventEntity[] | undefined;
  /** Extra agents, e.g. the source system a viewer queried (Destination). */
  agents?: AuditEventAgent[] | undefined;
  nen7513?: Nen7513 | undefined;
  /** The server's observer identity (issuer URL). */
  observer: string;
}

const ROLE_DISPLAY: Record<string, string> = {
  '110150': 'Application',
  '110152': 'Destination Role ID',
  '110153': 'Source Role ID',
};

function agents(e: EventInput): AuditEventAgent[] {
  const out: AuditEventAgent[] = [];
  const { who } = e;
  if (who.clientId) {
    out.push({
      type: { coding: [code(DCM, e.clientRole, ROLE_DISPLAY[e.clientRole])] },
      who: { identifier: { value: who.clientId } },
      requestor: !who.user,
      ...(who.address ? { network: { address: who.address, type: '2' as const } } : {}),
    });
  }
  if (who.user) {
    out.push({
      type: {
        coding: [code('http://terminology.hl7.org/CodeSystem/v3-ParticipationType', 'IRCP', 'information recipient')],
      },
      who: {
        identifier: { ...(who.user.issuer ? { system: who.user.issuer } : {}), value: who.user.id },
        ...(who.user.display ? { display: who.user.display } : {}),
      },
      ...(who.user.fhirUser ? { altId: who.user.fhirUser } : {}),
      requestor: true,
      ...(who.tokenId ? { policy: [who.tokenId] } : {}),
      ...(who.roles?.length ? { role: who.roles.map((r) => ({ coding: [r] })) } : {}),
      ...(who.purposeOfUse?.length ? { purposeOfUse: who.purposeOfUse.map((p) => ({ coding: [p] })) } : {}),
      ...(!who.clientId && who.address ? { network: { address: who.address, type: '2' as const } } : {}),
    });
  } else if (who.clientId && (who.tokenId || who.purposeOfUse?.length)) {
    const client = out[0] as AuditEventAgent;
    if (who.tokenId) client.policy = [who.tokenId];
    if (who.purposeOfUse?.length) client.purposeOfUse = who.purposeOfUse.map((p) => ({ coding: [p] }));
  }
  if (who.orgOid || who.orgName) {
    out.push({
      type: { coding: [code(BALP_AGENT, 'UserOrganization', 'User Organization')] },
      who: {
        ...(who.orgOid ? { identifier: { system: 'urn:ietf:rfc:3986', value: `urn:oid:${who.orgOid}` } } : {}),
        ...(who.orgName ? { display: who.orgName } : {}),
      },
      requestor: false,
    });
  }
  const serverRole = e.clientRole === '110153' ? '110152' : e.clientRole === '110152' ? '110153' : undefined;
  out.push({
    type: {
      coding: [
        serverRole
          ? code(DCM, serverRole, ROLE_DISPLAY[serverRole])
          : code('http://terminology.hl7.org/CodeSystem/provenance-participant-type', 'custodian', 'Custodian'),
      ],
    },
    who: { display: 'carevault', identifier: { value: e.observer } },
    requestor: false,
  });
  out.push(...(e.agents ?? []));
  return out;
}

function entities(e: EventInput): AuditEventEntity[] {
  const out: AuditEventEntity[] = [];
  for (const p of e.patients ?? []) {
    out.push({
      what: { reference: p },
      type: code(ENTITY_TYPE, '1', 'Person'),
      role: code(OBJECT_ROLE, '1', 'Patient'),
    });
  }
  for (const o of e.objects ?? []) {
    out.push({
      what: { reference: o },
      type: code(ENTITY_TYPE, '2', 'System Object'),
      role: code(OBJECT_ROLE, '4', 'Domain Resource'),
    });
  }
  if (e.query) {
    out.push({
      type: code(ENTITY_TYPE, '2', 'System Object'),
      role: code(OBJECT_ROLE, '24', 'Query'),
      query: Buffer.from(e.query.raw).toString('base64'),
      ...(e.query.description ? { description: e.query.description } : {}),
    });
  }
  out.push(...(e.entities ?? []));
  if (e.who.requestId) {
    const detail = [
      ...(e.who.correlationId ? [{ type: 'X-Correlation-Id', valueString: e.who.correlationId }] : []),
      ...(e.who.userContext ? [{ type: 'X-ZV-Context', valueString: e.who.userContext }] : []),
      ...(e.who.claimed ?? []).map(([name, value]) => ({ type: `claimed:${name}`, valueString: value })),
    ];
    out.push({
      what: { identifier: { value: e.who.requestId } },
      type: code(BALP_ENTITY, 'XrequestId', 'X-Request-Id'),
      ...(detail.length ? { detail } : {}),
    });
  }
  return out;
}

// Random bytes for event ids, drawn from the system 4 KiB at a time (as randomUUID does): one call per id cost
// more than the rest of the id.
const entropy = Buffer.alloc(4096);
let drawn = entropy.length;

/** FHIR id characters in ascending byte order, so that ids of later events sort after earlier ones. */
const ORDERED = '-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/**
 * 22 characters: the time in milliseconds (8 characters, 48 bits, ordered) and 84 random bits. Ordered ids put
 * each new event at the end of the id index instead of on a random page of it: a group of events dirties one
 * page of that index instead of one each, and every dirty page is written again at commit.
 */
function eventId(): string {
  if (drawn + 14 > entropy.length) {
    randomFillSync(entropy);
    drawn = 0;
  }
  let id = '';
  let t = Date.now();
  for (let i = 0; i < 8; i++) {
    id = ORDERED[t % 64] + id;
    t = Math.floor(t / 64);
  }
  for (let i = 0; i < 14; i++) id += ORDERED[(entropy[drawn++] as number) & 63];
  return id;
}

/**
 * What an event is stored and hashed as: its input less what the row's own columns hold (partition, request and
 * correlation id). The BALP resource is rendered from it when the event is read (`renderAuditEvent`).
 */
export type StoredInput = Omit<EventInput, 'partition'>;

/** Builds the row that stores an event: its search columns, its refs and the compact input (chain input). */
export function auditRecord(e: EventInput): AuditRecord {
  // An event's id is stored twice (row, unique index), so its length counts.
  const id = eventId();
  const recorded = new Date().toISOString();
  const { partition, who, ...rest } = e;
  const { requestId, correlationId, ...stored } = who;
  const refs: AuditRecord['refs'] = [
    ...(e.patients ?? []).map((value) => ({ kind: 'patient' as const, value })),
    ...(e.objects ?? []).map((value) => ({ kind: 'entity' as const, value: value.replace(/\/_history\/.*$/, '') })),
  ];
  if (who.clientId) refs.push({ kind: 'agent', value: who.clientId });
  if (who.user) refs.push({ kind: 'agent', value: who.user.id });
  return {
    id,
    recorded,
    partition,
    type: key(e.type),
    subtype: e.subtype ? key(e.subtype) : undefined,
    action: e.action,
    outcome: e.outcome,
    requestId,
    correlationId,
    refs: dedupe(refs),
    compact: JSON.stringify({ ...rest, who: stored } satisfies StoredInput),
  };
}

/** The BALP AuditEvent of a stored event: its row's columns and its compact input. */
export function renderAuditEvent(
  row: { id: string; recorded: string; requestId: string | undefined; correlationId: string | undefined },
  input: StoredInput,
): AuditEvent {
  const e: EventInput = { ...input, who: { ...input.who, requestId: row.requestId, correlationId: row.correlationId } };
  const nen = Object.entries(e.nen7513 ?? {}).filter(([, v]) => v !== undefined) as [string, string][];
  return {
    resourceType: 'AuditEvent',
    id: row.id,
    meta: { profile: ['https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Base'] },
    ...(nen.length
      ? { extension: [{ url: NEN7513, extension: nen.map(([url, valueString]) => ({ url, valueString })) }] }
      : {}),
    type: e.type,
    ...(e.subtype ? { subtype: [e.subtype] } : {}),
    ...(e.action ? { action: e.action } : {}),
    recorded: row.recorded,
    outcome: e.outcome,
    ...(e.outcomeDesc ? { outcomeDesc: e.outcomeDesc } : {}),
    agent: agents(e),
    source: {
      observer: { display: 'carevault', identifier: { value: e.observer } },
      type: [code('http://terminology.hl7.org/CodeSystem/security-source-type', '4', 'Application Server')],
    },
    entity: entities(e),
  };
}

function dedupe(refs: AuditRecord['refs']): AuditRecord['refs'] {
  const seen = new Set<string>();
  return refs.filter((r) => {
    const k = `${r.kind}=${r.value}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** BALP: the client is Source for writes and queries, Destination for reads, Application for deletes. */
export function clientRoleFor(interaction: string): EventInput['clientRole'] {
  if (interaction === 'delete') return '110150';
  if (interaction === 'read' || interaction === 'vread' || interaction.startsWith('history')) return '110152';
  return '110153';
}

export function actionFor(interaction: string): EventInput['action'] {
  switch (interaction) {
    case 'create':
      return 'C';
    case 'update':
    case 'patch':
      return 'U';
    case 'delete':
      return 'D';
    case 'read':
    case 'vread':
    case 'history-instance':
    case 'history-type':
    case 'history-system':
      return 'R';
    default:
      return 'E';
  }
}

export function outcomeFor(status: number): Outcome {
  return status < 400 ? '0' : status < 500 ? '4' : '8';
}
