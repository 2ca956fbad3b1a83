import type { Bundle, FhirResource } from 'fhir/r4.js';
import type { FhirContext } from '../fhir/context.ts';
import { FhirError } from '../fhir/errors.ts';
import { groupMembers, memberDuring, memberPatient } from '../fhir/group-members.ts';
import { ID_RE, RESOURCE_TYPES } from '../fhir/resource-types.ts';
import { extractIndex } from '../fhir/search/extract.ts';
import { dateRange } from '../fhir/search/values.ts';
import type { PagePosition, SearchFilter } from '../store/types.ts';
import { compartmentFilter, inPatientCompartment, patientsIn } from '../vault/compartment.ts';
import type { MeasurementPeriod } from './period.ts';

const PAGE = 2_000;
/** Patients per compartment query: the filter lists them all. */
const PATIENTS_PER_QUERY = 200;

export interface PatientData {
  /** One collection Bundle per patient: the Patient and its resources of the required types. */
  bundles: Bundle[];
}

/** Whom a calculation is about: one Patient, or the members of a Group (DEQM: an attributed population). */
export type Subject = { patient: string } | { group: string };

/** `Patient/x`, `x` or `Group/x`; anything else (another vault's URL, another type) is refused. */
export function subjectOf(subject: string): Subject {
  const group = subject.startsWith('Group/') ? subject.slice('Group/'.length) : undefined;
  const id = group ?? (subject.startsWith('Patient/') ? subject.slice('Patient/'.length) : subject);
  if (!ID_RE.test(id)) throw new FhirError(400, 'not-supported', 'subject must be Patient/<id> or Group/<id>');
  return group !== undefined ? { group: id } : { patient: id };
}

/**
 * The Patients a subject stands for: the one named, or the Group's members that are Patients and members at
 * some time during the measurement period (not `inactive`, their `period` overlapping it); undefined: every
 * Patient of the vault. Reading a Group needs the same unrestricted access as the data (`mayRead`).
 */
export async function subjectPatients(
  ctx: FhirContext,
  subject: Subject | undefined,
  period: MeasurementPeriod,
  mayRead: (type: string) => void,
): Promise<string[] | undefined> {
  if (!subject) return undefined;
  if ('patient' in subject) return [subject.patient];
  mayRead('Group');
  const from = dateRange(period.start)?.[0] ?? Number.NEGATIVE_INFINITY;
  const to = dateRange(period.end)?.[1] ?? Number.POSITIVE_INFINITY;
  const members = (await groupMembers(ctx, subject.group)).filter((m) => memberDuring(m, from, to));
  return [...new Set(members.flatMap((m) => memberPatient(m) ?? []))];
}

/** Every match, a page at a time, each page continuing where the last ended (not by offset: O(N) a page). */
async function* all(ctx: FhirContext, type: string, filters: SearchFilter[]) {
  let after: PagePosition | undefined;
  for (;;) {
    const { matches } = await ctx.store.resources.search(ctx.partition, {
      type,
      filters,
      sort: [],
      limit: PAGE,
      offset: 0,
      total: false,
      after,
    });
    for (const m of matches) yield JSON.parse(m.content) as FhirResource & { id: string };
    const last = matches[matches.length - 1];
    if (matches.length < PAGE || !last) return;
    if (!last.lastUpdated) throw new Error('a search match without its lastUpdated cannot be paged from');
    after = { lastUpdated: last.lastUpdated, id: last.id };
  }
}

/**
 * The patients of this vault (or those named: one subject, a Group's members) with the resources a measure's
 * data requirements name, grouped per patient through the Patient compartment — what fqm-execution evaluates.
 * Only this vault's rows are read, so a subject from another vault is simply not found; a single named patient
 * who is not here is a 404, a Group member who is not here counts as no one.
 */
export async function patientData(
  ctx: FhirContext,
  types: Iterable<string>,
  patients: { ids: string[]; single: boolean } | undefined,
  mayRead: (type: string) => void,
): Promise<PatientData> {
  const wanted = [...new Set(types)].filter((t) => t !== 'Patient' && RESOURCE_TYPES.has(t));
  for (const type of ['Patient', ...wanted]) mayRead(type);
  const byPatient = new Map<string, FhirResource[]>();
  const chunks: string[][] = [];
  for (let i = 0; patients && i < patients.ids.length; i += PATIENTS_PER_QUERY)
    chunks.push(patients.ids.slice(i, i + PATIENTS_PER_QUERY));
  for (const chunk of patients ? chunks : [undefined]) {
    const filters: SearchFilter[] = chunk ? [{ kind: 'id', ids: chunk }] : [];
    for await (const p of all(ctx, 'Patient', filters)) byPatient.set(p.id, [p]);
  }
  if (patients?.single && byPatient.size === 0)
    throw new FhirError(404, 'not-found', `Patient/${patients.ids[0]} not found`);
  const shared: FhirResource[] = [];
  for (const type of wanted) {
    // Only the compartments of the patients found: a member who is not here has none to read.
    const found = [...byPatient.keys()];
    const scopes: (SearchFilter | undefined)[] = [];
    if (!patients || !inPatientCompartment(type)) scopes.push(undefined);
    else {
      for (let i = 0; i < found.length; i += PATIENTS_PER_QUERY)
        scopes.push(compartmentFilter(type, found.slice(i, i + PATIENTS_PER_QUERY)));
    }
    const seen = scopes.length > 1 ? new Set<string>() : undefined;
    for (const scoped of scopes) {
      for await (const r of all(ctx, type, scoped ? [scoped] : [])) {
        if (seen?.has(r.id)) continue;
        seen?.add(r.id);
        const about = patientsIn(type, r.id, extractIndex(r as unknown as Record<string, unknown>));
        // Resources outside the Patient compartment (Medication, Location…) are shared by every patient.
        if (about.length === 0 && !inPatientCompartment(type)) shared.push(r);
        for (const ref of about) byPatient.get(ref.slice('Patient/'.length))?.push(r);
      }
    }
  }
  const bundles: Bundle[] = [...byPatient.values()].map((resources) => ({
    resourceType: 'Bundle',
    type: 'collection',
    entry: [...resources, ...shared].map((resource) => ({ resource })),
  }));
  return { bundles };
}
