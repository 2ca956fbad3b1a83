import { createRequire } from 'node:module';
import type { IndexRows, ProxyLink, SearchFilter } from '../store/types.ts';

const require = createRequire(import.meta.url);
/**
 * Resource type → search parameters linking it to a patient: the official R4 Patient CompartmentDefinition, and a
 * Binary by its securityContext (fhir/search/definitions.ts). The definition leaves Binary out, which let a
 * patient-context token read every document of the vault; a Binary is now in the compartment of the patient its
 * securityContext names, or of the patients of the resource it names there (below), and in none without one.
 */
const COMPARTMENT = {
  ...(require('./patient-compartment.json') as Record<string, string[]>),
  Binary: ['security-context'],
} as Record<string, string[]>;

/**
 * R4 Binary.securityContext: "the referenced resource stands in as a proxy equivalent" for deciding access. A
 * Binary whose securityContext names a resource of the compartment (a DocumentReference, a Media…) is in the
 * compartments that resource is in now — one step: neither a Patient (named directly) nor a Binary.
 */
export const PROXY_PARAM = 'security-context';
const PROXY_LINKS: readonly ProxyLink[] = (() => {
  const byParams = new Map<string, { types: string[]; params: string[] }>();
  for (const [type, params] of Object.entries(COMPARTMENT)) {
    if (type === 'Binary') continue;
    const key = [...params].sort().join(',');
    const link = byParams.get(key) ?? { types: [], params: [...params].sort() };
    link.types.push(type);
    byParams.set(key, link);
  }
  return [...byParams.values()];
})();

/**
 * Whether `type` belongs to the Patient compartment. Types outside it (Practitioner, Organization,
 * Medication, Location…) are shared resources a patient-context token may read without restriction.
 */
export function inPatientCompartment(type: string): boolean {
  return type === 'Patient' || COMPARTMENT[type] !== undefined;
}

/** The search filter selecting the resources of `type` in the compartment of any of `patients` (ids). */
export function compartmentFilter(type: string, patients: readonly string[]): SearchFilter | undefined {
  if (type === 'Patient') return { kind: 'id', ids: [...patients] };
  const params = COMPARTMENT[type];
  if (!params) return undefined;
  const values = patients.map((id) => ({ type: 'Patient', id }));
  const filters: SearchFilter[] = params.map((param) => ({ kind: 'reference', param, values }));
  if (type === 'Binary') filters.push({ kind: 'proxy', param: PROXY_PARAM, links: PROXY_LINKS, values });
  return { kind: 'or', filters };
}

/**
 * The test of compartmentFilter on a resource about to be written, from its extracted index rows — except for a
 * Binary standing in by proxy, which needs its proxy's rows (`proxyOf`).
 */
export function indexInCompartment(type: string, id: string, index: IndexRows, patient: string): boolean {
  if (type === 'Patient') return id === patient;
  const params = COMPARTMENT[type];
  if (!params) return true;
  return index.reference.some((r) => params.includes(r.param) && r.targetType === 'Patient' && r.targetId === patient);
}

/**
 * The resource whose compartments a resource takes by proxy (a Binary's securityContext naming a resource of the
 * compartment other than a Patient), when it has one.
 */
export function proxyOf(type: string, index: Pick<IndexRows, 'reference'>): { type: string; id: string } | undefined {
  if (type !== 'Binary') return undefined;
  const r = index.reference.find((x) => x.param === PROXY_PARAM);
  const target = r?.targetType;
  if (!r?.targetId || !target || target === 'Patient' || target === 'Binary' || !COMPARTMENT[target]) return undefined;
  return { type: target, id: r.targetId };
}

/** The patients a resource is about (its own Patient-compartment links), as `Patient/id` references. */
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
