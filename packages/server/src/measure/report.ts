import { randomUUID } from 'node:crypto';
import type { FhirResource, List, Measure, MeasureReport, MeasureReportGroup, Observation, Resource } from 'fhir/r4.js';

const POPULATION = 'http://terminology.hl7.org/CodeSystem/measure-population';
const CQFM = 'http://hl7.org/fhir/us/cqfmeasures/StructureDefinition';

/** One population result of fqm-execution's calculation (patient level or one episode). */
interface PopulationResult {
  populationId?: string;
  populationType: string;
  result: boolean;
  observations?: unknown[] | null;
}
interface GroupResult {
  groupId: string;
  populationResults?: PopulationResult[];
  episodeResults?: { episodeId: string; populationResults: PopulationResult[] }[];
}
export interface PatientResult {
  patientId: string;
  detailedResults?: GroupResult[];
  evaluatedResource?: Resource[];
}

type ReportType = 'individual' | 'subject-list' | 'summary';

const codeOf = (p: { code?: { coding?: { code?: string }[] } }) => p.code?.coding?.[0]?.code ?? '';
const ext = (e: { extension?: { url: string; valueString?: string; valueCode?: string }[] }, name: string) =>
  e.extension?.find((x) => x.url === `${CQFM}/${name}`);
const numbers = (xs: unknown[] | null | undefined) =>
  (xs ?? []).flatMap((x) =>
    typeof x === 'number'
      ? [x]
      : typeof (x as { value?: unknown })?.value === 'number'
        ? [(x as { value: number }).value]
        : [],
  );

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

/**
 * The MeasureReport of fqm-execution's population results, group by group of the Measure: counts of patients
 * (patient-based) or of episodes (episode-of-care), measure observations (their count, and for an individual
 * report the values as contained Observations), and the score. fqm-execution's own report builder recognises
 * ratio observations only under fixed statement names, so the report is assembled here from its results.
 */
export function measureReport(
  measure: Measure,
  results: PatientResult[],
  type: ReportType,
  period: { start: string; end: string },
  /** The Group a summary or subject list is of (`Group/id`), when it is of one. */
  ofGroup?: string,
): MeasureReport {
  const contained: FhirResource[] = [];
  const groups: MeasureReportGroup[] = (measure.group ?? []).map((group, gi) => {
    const groupId = group.id ?? String(gi);
    const scoring =
      (ext(group, 'cqfm-scoring') as { valueCodeableConcept?: { coding?: { code?: string }[] } } | undefined)
        ?.valueCodeableConcept?.coding?.[0]?.code ??
      measure.scoring?.coding?.[0]?.code ??
      'proportion';
    const counts = new Map<string, number>();
    const observations = new Map<string, number[]>();
    const subjects = new Map<string, string[]>();
    for (const r of results) {
      const g = r.detailedResults?.find((d) => d.groupId === groupId) ?? r.detailedResults?.[gi];
      if (!g) continue;
      const units = g.episodeResults?.length
        ? g.episodeResults.map((e) => e.populationResults)
        : [g.populationResults ?? []];
      for (const prs of units) {
        for (const pr of prs) {
          const id = pr.populationId ?? pr.populationType;
          if (pr.populationType === 'measure-observation') {
            if (pr.result) observations.set(id, [...(observations.get(id) ?? []), ...numbers(pr.observations)]);
            continue;
          }
          if (!pr.result) continue;
          counts.set(id, (counts.get(id) ?? 0) + 1);
          const s = subjects.get(id) ?? [];
          if (!s.includes(r.patientId)) s.push(r.patientId);
          subjects.set(id, s);
        }
      }
    }
    const countOf = (code: string) =>
      (group.population ?? [])
        .filter((p) => codeOf(p) === code)
        .reduce((n, p) => n + (counts.get(p.id ?? code) ?? 0), 0);
    const population = (group.population ?? []).map((p) => {
      const id = p.id ?? codeOf(p);
      const obs = observations.get(id) ?? [];
      const out: NonNullable<MeasureReportGroup['population']>[number] = {
        ...(p.id ? { id: p.id } : {}),
        code: { coding: [{ system: POPULATION, code: codeOf(p) }] },
        count: codeOf(p) === 'measure-observation' ? obs.length : (counts.get(id) ?? 0),
      };
      const ref = ext(p, 'cqfm-criteriaReference')?.valueString;
      if (ref) out.extension = [{ url: `${CQFM}/cqfm-criteriaReference`, valueString: ref }];
      if (type === 'individual') {
        for (const value of obs) {
          const o: Observation = {
            resourceType: 'Observation',
            id: randomUUID(),
            status: 'final',
            code: { text: p.criteria?.expression ?? 'measure-observation' },
            valueQuantity: { value },
            extension: [{ url: `${CQFM}/cqfm-criteriaReference`, valueString: ref ?? id }],
          };
          contained.push(o);
        }
      }
      if (type === 'subject-list' && codeOf(p) !== 'measure-observation') {
        const listId = randomUUID();
        contained.push({
          resourceType: 'List',
          id: listId,
          status: 'current',
          mode: 'snapshot',
          entry: (subjects.get(id) ?? []).map((s) => ({ item: { reference: `Patient/${s}` } })),
        } satisfies List);
        out.subjectResults = { reference: `#${listId}` };
      }
      return out;
    });
    const obsFor = (code: string) => {
      const target = (group.population ?? []).find((p) => codeOf(p) === code)?.id;
      const op = (group.population ?? []).find(
        (p) => codeOf(p) === 'measure-observation' && ext(p, 'cqfm-criteriaReference')?.valueString === target,
      );
      const method = (ext(op ?? {}, 'cqfm-aggregateMethod') as { valueCode?: string } | undefined)?.valueCode ?? 'sum';
      return op ? aggregate(method, observations.get(op.id ?? '') ?? []) : undefined;
    };
    let score: number | undefined;
    if (scoring === 'proportion') {
      const denominator = countOf('denominator') - countOf('denominator-exclusion') - countOf('denominator-exception');
      if (denominator > 0) score = (countOf('numerator') - countOf('numerator-exclusion')) / denominator;
    } else if (scoring === 'ratio') {
      const [n, d] = [obsFor('numerator'), obsFor('denominator')];
      if (n !== undefined || d !== undefined) {
        if (d) score = (n ?? 0) / d;
      } else if (countOf('denominator') > 0) {
        score = countOf('numerator') / countOf('denominator');
      }
    } else if (scoring === 'continuous-variable') {
      const op = (group.population ?? []).find((p) => codeOf(p) === 'measure-observation');
      const method = (ext(op ?? {}, 'cqfm-aggregateMethod') as { valueCode?: string } | undefined)?.valueCode ?? 'sum';
      score = aggregate(method, observations.get(op?.id ?? '') ?? []);
    }
    return {
      ...(group.id ? { id: group.id } : {}),
      population,
      ...(score !== undefined ? { measureScore: { value: score } } : {}),
    };
  });
  const evaluated = new Set<string>();
  for (const r of results)
    for (const e of r.evaluatedResource ?? []) if (e.id) evaluated.add(`${e.resourceType}/${e.id}`);
  const patient = type === 'individual' ? results[0]?.patientId : undefined;
  const subject = patient ? `Patient/${patient}` : ofGroup;
  return {
    resourceType: 'MeasureReport',
    id: randomUUID(),
    ...(contained.length ? { contained } : {}),
    status: 'complete',
    type: type === 'subject-list' ? 'subject-list' : type === 'individual' ? 'individual' : 'summary',
    measure: measure.url ? `${measure.url}${measure.version ? `|${measure.version}` : ''}` : `Measure/${measure.id}`,
    ...(subject ? { subject: { reference: subject } } : {}),
    date: new Date().toISOString(),
    period: { start: period.start, end: period.end },
    group: groups,
    ...(evaluated.size ? { evaluatedResource: [...evaluated].map((reference) => ({ reference })) } : {}),
  };
}
