import type { Resource } from '../../fhir-types.js';

/** One search a source is asked for one patient; `patient=<id>` is added per source. */
export interface BgzQuery {
  type: string;
  params: [string, string][];
}

const OBS_CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';

/**
 * The Basisgegevensset Zorg queries of the Zorgviewer's PlanDefinition BgZ2017 (as at the IG's HEAD), used when
 * the directory holds none: problems, procedures, laboratory results and vital signs, allergies, alerts,
 * documents and treatment directives.
 */
export const DEFAULT_BGZ: BgzQuery[] = [
  { type: 'Condition', params: [] },
  { type: 'Procedure', params: [] },
  { type: 'Observation', params: [['category', `${OBS_CATEGORY}|laboratory,${OBS_CATEGORY}|vital-signs`]] },
  { type: 'AllergyIntolerance', params: [] },
  { type: 'Flag', params: [] },
  { type: 'DocumentReference', params: [] },
  // zib TreatmentDirective and AdvanceDirective (nl-core Consent profiles).
  {
    type: 'Consent',
    params: [['category', 'http://snomed.info/sct|11291000146105,http://snomed.info/sct|11341000146107']],
  },
];

interface DataRequirement {
  type?: string;
  codeFilter?: { path?: string; searchParam?: string; code?: { system?: string; code?: string }[] }[];
}
interface Action {
  output?: DataRequirement[];
  action?: Action[];
}

/**
 * Queries from a PlanDefinition (seq-3 step 6: `action.output[].type` and its `codeFilter`): each output is one
 * search, each code filter one parameter whose codes are OR-ed. Patient is looked up separately.
 */
export function bgzFromPlanDefinition(plan: Resource): BgzQuery[] {
  const out: BgzQuery[] = [];
  const walk = (actions: Action[] | undefined) => {
    for (const a of actions ?? []) {
      for (const o of a.output ?? []) {
        if (!o.type || o.type === 'Patient' || !/^[A-Z][A-Za-z]{1,63}$/.test(o.type)) continue;
        const params: [string, string][] = [];
        for (const f of o.codeFilter ?? []) {
          const name = f.searchParam ?? f.path;
          const codes = (f.code ?? [])
            .filter((c) => c.code)
            .map((c) => (c.system ? `${c.system}|${c.code}` : `${c.code}`));
          if (name && /^[a-z][a-z0-9-]*$/.test(name) && codes.length) params.push([name, codes.join(',')]);
        }
        out.push({ type: o.type, params });
      }
      walk(a.action);
    }
  };
  walk((plan as { action?: Action[] }).action);
  return out;
}
