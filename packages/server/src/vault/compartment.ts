import { createRequire } from 'node:module';
import type { IndexRows, SearchFilter } from '../store/types.ts';

const require = createRequire(import.meta.url);
/**
 * Resource type → search parameters linking it to a patient: the official R4 Patient CompartmentDefinition, and a
 * Binary by its securityContext (fhir/search/definitions.ts). The definition leaves Binary out, which let a
 * patient-context token read every document of the vault; a Binary is now in the compartment of the patient its
 * securityContext names, and in none without one.
 */
const COMPARTMENT = {
  ...(require('./patient-compartment.json') as Record<string, string[]>),
  Binary: ['security-context'],
} as Record<string, string[]>;

/**
 * Whether `type` belongs to the Patient compartment. Types outside it (Practitioner, Organization,
 * Medication, Location…) are shared resources a patient-context token may read without restriction.
 */
export function inPatientCompartment(type: string): boolean {
  return type === 'Patient' || COMPARTMENT[type] !== undefined;
}

/** The search filter selecting the resources of `type` in the compartment of Patient/`patient`. */
export function compartmentFilter(type: string, patient: string): SearchFilter | undefined {
  if (type === 'Patient') return { kind: 'id', ids: [patient] };
  const params = COMPARTMENT[type];
  if (!params) return undefined;
  return {
    kind: 'or',
    filters: params.map((param) => ({ kind: 'reference', param, values: [{ type: 'Patient', id: patient }] })),
  };
}

/** The same test on a resource about to be written, from its extracted index rows. */
export function indexInCompartment(type: string, id: string, index: IndexRows, patient: string): boolean {
  if (type === 'Patient') return id === patient;
  const params = COMPARTMENT[type];
  if (!params) return true;
  return index.reference.some((r) => params.includes(r.param) && r.targetType === 'Patient' && r.targetId === patient);
}

/** The patients a resource is about (its Patient-compartment links), as `Patient/id` references. */
export function patientsIn(type: string, id: string, index: Pick<IndexRows, 'reference'>): string[] {
  if (type === 'Patient') return [`Patient/${id}`];
  const params = COMPARTMENT[type];
  if (!params) return [];
  const out = new Set<string>();
  for (const r of index.reference) {
    if (r.targetType === 'Patient' && r.targetId && params.includes(r.param)) out.add(`Patient/${r.targetId}`);
  }
  return [...out];
}

/** The compartment parameters of a type (for looking up a stored resource's patients). */
export function compartmentParams(type: string): readonly string[] {
  return COMPARTMENT[type] ?? [];
}
