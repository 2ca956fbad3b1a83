import type { Bundle, FhirResource } from 'fhir/r4.js';
import type { FhirContext } from '../fhir/context.ts';
import { FhirError } from '../fhir/errors.ts';
import { ID_RE, RESOURCE_TYPES } from '../fhir/resource-types.ts';
import { extractIndex } from '../fhir/search/extract.ts';
import type { PagePosition, SearchFilter } from '../store/types.ts';
import { compartmentFilter, inPatientCompartment, patientsIn } from '../vault/compartment.ts';

const PAGE = 2_000;

export interface PatientData {
  /** One collection Bundle per patient: the Patient and its resources of the required types. */
  bundles: Bundle[];
}

/** `Patient/x` or `x` → `x`; anything else (a Group, another vault's URL) is refused. */
export function subjectId(subject: string): string {
  const id = subject.startsWith('Patient/') ? subject.slice('Patient/'.length) : subject;
  if (!ID_RE.test(id))
    throw new FhirError(400, 'not-supported', 'subject must be Patient/<id> (Groups are not supported)');
  return id;
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
 * The patients of this vault (or the one subject) with the resources a measure's data requirements name,
 * grouped per patient through the Patient compartment — what fqm-execution evaluates. Only this vault's rows
 * are read, so a subject from another vault is simply not found.
 */
export async function patientData(
  ctx: FhirContext,
  types: Iterable<string>,
  subject: string | undefined,
  mayRead: (type: string) => void,
): Promise<PatientData> {
  const wanted = [...new Set(types)].filter((t) => t !== 'Patient' && RESOURCE_TYPES.has(t));
  for (const type of ['Patient', ...wanted]) mayRead(type);
  const byPatient = new Map<string, FhirResource[]>();
  const patientFilter: SearchFilter[] = subject ? [{ kind: 'id', ids: [subject] }] : [];
  for await (const p of all(ctx, 'Patient', patientFilter)) byPatient.set(p.id, [p]);
  if (subject && !byPatient.has(subject)) throw new FhirError(404, 'not-found', `Patient/${subject} not found`);
  const shared: FhirResource[] = [];
  for (const type of wanted) {
    const scoped = subject ? compartmentFilter(type, [subject]) : undefined;
    for await (const r of all(ctx, type, scoped ? [scoped] : [])) {
      const patients = patientsIn(type, r.id, extractIndex(r as unknown as Record<string, unknown>));
      // Resources outside the Patient compartment (Medication, Location…) are shared by every patient.
      if (patients.length === 0 && !inPatientCompartment(type)) shared.push(r);
      for (const ref of patients) byPatient.get(ref.slice('Patient/'.length))?.push(r);
    }
  }
  const bundles: Bundle[] = [...byPatient.values()].map((resources) => ({
    resourceType: 'Bundle',
    type: 'collection',
    entry: [...resources, ...shared].map((resource) => ({ resource })),
  }));
  return { bundles };
}
