import { CarevaultError } from '../../errors.js';
import type { FhirClient } from '../../fhir-client.js';
import type { Resource } from '../../fhir-types.js';

/** A measure's data requirement as `$data-requirements` returns it (Library.dataRequirement). */
export interface DataRequirement {
  type?: string;
  codeFilter?: {
    path?: string;
    searchParam?: string;
    valueSet?: string;
    code?: { system?: string; code?: string }[];
  }[];
  dateFilter?: { path?: string; searchParam?: string }[];
}

/** One search the EHR is asked per patient (`patient=<id>` is added per patient). */
export interface MeasureQuery {
  type: string;
  params: [string, string][];
}

export class MeasureDataError extends CarevaultError {}

const TYPE_RE = /^[A-Z][A-Za-z]{1,63}$/;
/**
 * Elements of FHIR type `code` (not Coding): their values carry no system on the wire, so a system from the
 * requirement (e.g. event-status for `status`) would make servers that match systems strictly find nothing.
 */
const PLAIN_CODES = new Set(['status', 'intent', 'priority', 'gender', 'use']);
const PARAM_RE = /^[a-z][a-z0-9-]*$/;

/**
 * Search parameters for the date paths data requirements name (R4 search parameters `date` of each type), so
 * a requirement's dateFilter can narrow the query to the measurement period.
 */
const DATE_PARAM: Record<string, Record<string, string>> = {
  Encounter: { period: 'date' },
  Procedure: { performed: 'date', 'performed.ofType(Period)': 'date', 'performed.ofType(dateTime)': 'date' },
  Observation: { effective: 'date', 'effective.ofType(dateTime)': 'date', 'effective.ofType(Period)': 'date' },
  Condition: { onset: 'onset-date', 'onset.ofType(dateTime)': 'onset-date', recordedDate: 'recorded-date' },
  MedicationRequest: { authoredOn: 'authoredon' },
  Immunization: { occurrence: 'date', 'occurrence.ofType(dateTime)': 'date' },
};

/** The codes of a ValueSet: its expansion, else the concepts its compose lists explicitly. */
function codesOf(vs: Resource): string[] {
  const expansion = (vs.expansion as { contains?: { system?: string; code?: string }[] } | undefined)?.contains;
  if (expansion?.length)
    return expansion.filter((c) => c.code).map((c) => (c.system ? `${c.system}|${c.code}` : `${c.code}`));
  const include = (
    vs.compose as { include?: { system?: string; concept?: { code?: string }[]; filter?: unknown[] }[] } | undefined
  )?.include;
  if (!include?.length || include.some((i) => i.filter?.length || !i.concept?.length)) return [];
  return include.flatMap((i) =>
    (i.concept ?? []).filter((c) => c.code).map((c) => `${i.system ? `${i.system}|` : ''}${c.code}`),
  );
}

/**
 * The EHR queries a measure's data requirements imply: one search per requirement, a code filter becoming the
 * ValueSet's codes (fetched from `terminology`, the receiving server, since an EHR rarely supports `:in`), a
 * fixed code list its codes, a date filter the measurement period.
 */
export async function queriesFromRequirements(
  requirements: DataRequirement[],
  terminology: FhirClient,
  period: { start: string; end: string },
): Promise<MeasureQuery[]> {
  const valueSets = new Map<string, string[]>();
  const expand = async (url: string) => {
    const hit = valueSets.get(url);
    if (hit) return hit;
    const found = await terminology.search('ValueSet', { url: url.split('|')[0] as string });
    const vs = found.entry?.find((e) => e.resource?.resourceType === 'ValueSet')?.resource;
    if (!vs) throw new MeasureDataError(`the receiving server has no ValueSet ${url}`);
    const codes = codesOf(vs);
    if (codes.length === 0)
      throw new MeasureDataError(`ValueSet ${url} has no expansion or explicit codes to query with`);
    valueSets.set(url, codes);
    return codes;
  };
  const out: MeasureQuery[] = [];
  for (const r of requirements) {
    if (!r.type || r.type === 'Patient' || !TYPE_RE.test(r.type)) continue;
    const params: [string, string][] = [];
    for (const f of r.codeFilter ?? []) {
      const name = f.searchParam ?? f.path;
      if (!name || !PARAM_RE.test(name)) continue;
      const codes = f.valueSet
        ? await expand(f.valueSet)
        : (f.code ?? [])
            .filter((c) => c.code)
            .map((c) => (c.system && !PLAIN_CODES.has(name) ? `${c.system}|${c.code}` : `${c.code}`));
      if (codes.length) params.push([name, codes.join(',')]);
    }
    for (const f of r.dateFilter ?? []) {
      const name = f.searchParam ?? (f.path ? DATE_PARAM[r.type]?.[f.path] : undefined);
      if (name && PARAM_RE.test(name)) params.push([name, `ge${period.start}`], [name, `le${period.end}`]);
    }
    const key = JSON.stringify([r.type, params]);
    if (!out.some((q) => JSON.stringify([q.type, q.params]) === key)) out.push({ type: r.type, params });
  }
  return out;
}
