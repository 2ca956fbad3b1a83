import type { MeasureGroup, MeasureGroupStratifier } from 'fhir/r4.js';

// Counting fqm-execution's results for one group of a Measure (or one stratum of it), and its score.

const CQFM = 'http://hl7.org/fhir/us/cqfmeasures/StructureDefinition';

/** One population result of fqm-execution's calculation (patient level or one episode). */
export interface PopulationResult {
  populationId?: string;
  populationType: string;
  result: boolean;
  observations?: unknown[] | null;
}
/** Whether a patient or an episode is in a stratifier's stratum (fqm-execution: `appliesResult` for patients). */
export interface StratifierResult {
  strataCode: string;
  strataId?: string;
  result: boolean;
  appliesResult?: boolean;
}
export interface GroupResult {
  groupId: string;
  populationResults?: PopulationResult[];
  stratifierResults?: StratifierResult[];
  episodeResults?: {
    episodeId: string;
    populationResults: PopulationResult[];
    stratifierResults?: StratifierResult[];
  }[];
}

/** What one group counts: a patient (patient-based measures) or one episode of a patient. */
export interface Unit {
  patientId: string;
  populations: PopulationResult[];
  strata: StratifierResult[];
}

/** The counts of a group or stratum: per population, its members, and its observation values. */
export interface Tally {
  counts: Map<string, number>;
  observations: Map<string, number[]>;
  subjects: Map<string, string[]>;
}

export const codeOf = (p: { code?: { coding?: { code?: string }[] } }) => p.code?.coding?.[0]?.code ?? '';
export const ext = (e: { extension?: { url: string; valueString?: string; valueCode?: string }[] }, name: string) =>
  e.extension?.find((x) => x.url === `${CQFM}/${name}`);
const numbers = (xs: unknown[] | null | undefined) =>
  (xs ?? []).flatMap((x) =>
    typeof x === 'number'
      ? [x]
      : typeof (x as { value?: unknown })?.value === 'number'
        ? [(x as { value: number }).value]
        : [],
  );

/** The units a group's results are made of: each patient, or each episode when the measure counts episodes. */
export function unitsOf(patientId: string, g: GroupResult): Unit[] {
  if (g.episodeResults?.length) {
    return g.episodeResults.map((e) => ({
      patientId,
      populations: e.populationResults,
      strata: e.stratifierResults ?? [],
    }));
  }
  return [{ patientId, populations: g.populationResults ?? [], strata: g.stratifierResults ?? [] }];
}

export function tally(units: Unit[]): Tally {
  const t: Tally = { counts: new Map(), observations: new Map(), subjects: new Map() };
  for (const u of units) {
    for (const pr of u.populations) {
      const id = pr.populationId ?? pr.populationType;
      if (pr.populationType === 'measure-observation') {
        if (pr.result) t.observations.set(id, [...(t.observations.get(id) ?? []), ...numbers(pr.observations)]);
        continue;
      }
      if (!pr.result) continue;
      t.counts.set(id, (t.counts.get(id) ?? 0) + 1);
      const s = t.subjects.get(id) ?? [];
      if (!s.includes(u.patientId)) s.push(u.patientId);
      t.subjects.set(id, s);
    }
  }
  return t;
}

/**
 * Whether a unit is in the stratum of the group's `index`-th stratifier: its result named by the stratifier's id,
 * else by its code's text (fqm-execution's strataCode), else in the stratifiers' order.
 */
export function inStratum(u: Unit, s: MeasureGroupStratifier, index: number): boolean {
  const r =
    (s.id ? u.strata.find((x) => x.strataId === s.id) : undefined) ??
    u.strata.find((x) => x.strataCode === (s.code?.text ?? s.id)) ??
    u.strata[index];
  return r ? (r.appliesResult ?? r.result) : false;
}

function aggregate(method: string, values: number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sum = values.reduce((a, b) => a + b, 0);
  switch (method) {
    case 'average':
      return sum / values.length;
    case 'count':
      return values.length;
    case 'min':
      return Math.min(...values);
    case 'max':
      return Math.max(...values);
    case 'median': {
      const s = [...values].sort((a, b) => a - b);
      const m = Math.floor(s.length / 2);
      return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
    }
    default:
      return sum;
  }
}

/** What a population of the group counts in a tally: its members, or for measure-observation its values. */
export function populationCount(p: NonNullable<MeasureGroup['population']>[number], t: Tally): number {
  const id = p.id ?? codeOf(p);
  return codeOf(p) === 'measure-observation' ? (t.observations.get(id) ?? []).length : (t.counts.get(id) ?? 0);
}

/** A population's count in a tally (every population of the group with that code, by its id). */
export const countOf = (group: MeasureGroup, t: Tally, code: string) =>
  (group.population ?? []).filter((p) => codeOf(p) === code).reduce((n, p) => n + (t.counts.get(p.id ?? code) ?? 0), 0);

/**
 * The score of a tally: proportion = (numerator − numerator-exclusion) / (denominator − denominator-exclusion −
 * denominator-exception); ratio = aggregate of numerator observations / aggregate of denominator observations, or
 * numerator / denominator counts without observations; continuous-variable = the aggregate of its observations.
 */
export function scoreOf(group: MeasureGroup, scoring: string, t: Tally): number | undefined {
  const count = (code: string) => countOf(group, t, code);
  const method = (op: { extension?: { url: string; valueCode?: string }[] } | undefined) =>
    ext(op ?? {}, 'cqfm-aggregateMethod')?.valueCode ?? 'sum';
  const obsFor = (code: string) => {
    const target = (group.population ?? []).find((p) => codeOf(p) === code)?.id;
    const op = (group.population ?? []).find(
      (p) => codeOf(p) === 'measure-observation' && ext(p, 'cqfm-criteriaReference')?.valueString === target,
    );
    return op ? aggregate(method(op), t.observations.get(op.id ?? '') ?? []) : undefined;
  };
  if (scoring === 'proportion') {
    const denominator = count('denominator') - count('denominator-exclusion') - count('denominator-exception');
    return denominator > 0 ? (count('numerator') - count('numerator-exclusion')) / denominator : undefined;
  }
  if (scoring === 'ratio') {
    const [n, d] = [obsFor('numerator'), obsFor('denominator')];
    if (n !== undefined || d !== undefined) return d ? (n ?? 0) / d : undefined;
    return count('denominator') > 0 ? count('numerator') / count('denominator') : undefined;
  }
  if (scoring === 'continuous-variable') {
    const op = (group.population ?? []).find((p) => codeOf(p) === 'measure-observation');
    return aggregate(method(op), t.observations.get(op?.id ?? '') ?? []);
  }
  return undefined;
}
