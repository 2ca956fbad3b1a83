import { actionFor, clientRoleFor, EVENT, type Outcome } from '../audit/balp.ts';
import type { AuditInput } from '../audit/trail.ts';
import type { CurrentVersion } from '../store/types.ts';
import { compartmentParams, patientsIn, proxyOf } from '../vault/compartment.ts';
import type { FhirContext } from './context.ts';
import { extractReferences } from './search/extract.ts';

export interface AccessDetails {
  objects?: string[] | undefined;
  patients?: string[] | undefined;
  query?: { raw: string; description?: string | undefined } | undefined;
  outcome?: Outcome | undefined;
  outcomeDesc?: string | undefined;
}

/** The BALP event of one FHIR interaction in a vault (L01–L05, NEN 7513 fields from the deciding rule). */
export function auditOf(ctx: FhirContext, interaction: string, d: AccessDetails): AuditInput {
  const { access } = ctx;
  return {
    type: EVENT.rest,
    subtype: EVENT.rest_(interaction),
    action: actionFor(interaction),
    outcome: d.outcome ?? '0',
    outcomeDesc: d.outcomeDesc,
    who: ctx.who,
    clientRole: clientRoleFor(interaction),
    partition: ctx.partition,
    patients: d.patients,
    objects: d.objects,
    query: d.query,
    nen7513: {
      autorisatieprotocol: access.person
        ? access.host
          ? `ehr-launch:${access.host}`
          : 'user-rights'
        : `vault-grant:${access.clientId}`,
      toestemmingsprofiel: access.grant,
    },
  };
}

/** Records a read-type access (read, vread, search, history) before its answer goes out. */
export async function auditAccess(ctx: FhirContext, interaction: string, d: AccessDetails): Promise<void> {
  if (!ctx.audit.enabled) return;
  await ctx.audit.record(auditOf(ctx, interaction, d));
}

/**
 * The patients the versions being disclosed are about (for read, vread and history events): extracted from
 * their content, as their index rows were, so a vread names the patients of that version and no query is spent.
 */
export function patientsOf(versions: readonly CurrentVersion[]): string[] {
  const out = new Set<string>();
  for (const v of versions) {
    if (v.type === 'Patient') {
      out.add(`Patient/${v.id}`);
      continue;
    }
    for (const p of patientsOfContent(v)) out.add(p);
  }
  return [...out];
}

/**
 * Parsing the resource read to find its patients was a fortieth of a read (docs/performance.md); the same
 * versions are read again and again, so the answer is kept per version. A kept answer is used only when the
 * content is the same string (the SQLite store hands out the very string it keeps, so the comparison is one
 * pointer): a version number alone could name content a rolled-back transaction wrote.
 */
const KEPT_CHARS = 4 * 1024 * 1024;
const keptPatients = new Map<string, { content: string; patients: string[] }>();
let keptChars = 0;

function patientsOfContent(v: CurrentVersion): string[] {
  const params = compartmentParams(v.type);
  if (v.content === undefined || params.length === 0) return [];
  const key = `${v.type}/${v.id}/${v.version}`;
  const kept = keptPatients.get(key);
  if (kept?.content === v.content) return kept.patients;
  const resource = JSON.parse(v.content) as Record<string, unknown>;
  const patients = patientsIn(v.type, v.id, { reference: extractReferences(resource, params) });
  if (kept) {
    keptPatients.delete(key);
    keptChars -= kept.content.length;
  }
  if (v.content.length <= KEPT_CHARS / 64) {
    keptPatients.set(key, { content: v.content, patients });
    keptChars += v.content.length;
    for (const [k, e] of keptPatients) {
      if (keptChars <= KEPT_CHARS) break;
      keptPatients.delete(k);
      keptChars -= e.content.length;
    }
  }
  return patients;
}

/** The patients a search names (patient=, subject=, or _id on Patient), for the search event. */
export function patientsSearched(type: string, params: [string, string][]): string[] {
  const out = new Set<string>();
  for (const [name, value] of params) {
    const base = name.split(':')[0];
    const isPatientParam = base === 'patient' || base === 'subject' || (type === 'Patient' && base === '_id');
    if (!isPatientParam) continue;
    for (const v of value.split(',')) {
      const m = /(?:^|\/)(?:Patient\/)?([A-Za-z0-9\-.]{1,64})$/.exec(v);
      if (m && (base !== 'subject' || v.includes('Patient/'))) out.add(`Patient/${m[1]}`);
    }
  }
  return [...out];
}

/** A read or vread that is about to be answered. */
export async function auditRead(ctx: FhirContext, interaction: 'read' | 'vread', v: CurrentVersion): Promise<void> {
  if (!ctx.audit.enabled) return;
  const patients = await patientsOfVersion(ctx, v);
  await auditAccess(ctx, interaction, { objects: [`${v.type}/${v.id}/_history/${v.version}`], patients });
}

/** The patients one version is about: its own, or — a Binary standing in by proxy — its proxy's, as it is now. */
export async function patientsOfVersion(ctx: FhirContext, v: CurrentVersion): Promise<string[]> {
  const patients = patientsOf([v]);
  if (patients.length > 0 || v.type !== 'Binary' || v.content === undefined) return patients;
  const resource = JSON.parse(v.content) as Record<string, unknown>;
  const proxy = proxyOf(v.type, { reference: extractReferences(resource, compartmentParams(v.type)) });
  return proxyPatients((type, id) => ctx.store.resources.current(ctx.partition, type, id), proxy);
}

/**
 * The patients of the resource a Binary takes its compartments from (vault/compartment.ts `proxyOf`), as it is
 * now: whom a disclosure of the Binary is about.
 */
export async function proxyPatients(
  current: (type: string, id: string) => Promise<CurrentVersion | undefined>,
  proxy: { type: string; id: string } | undefined,
): Promise<string[]> {
  if (!proxy) return [];
  const v = await current(proxy.type, proxy.id);
  return v?.content === undefined ? [] : patientsOf([v]);
}
