import { randomUUID } from 'node:crypto';
import type { FhirResource, List, Measure, MeasureReport, MeasureReportGroup, Observation, Resource } from 'fhir/r4.js';
import { codeOf, ext, type GroupResult, inStratum, populationCount, scoreOf, tally, unitsOf } from './tally.ts';

const POPULATION = 'http://terminology.hl7.org/CodeSystem/measure-population';
const CQFM = 'http://hl7.org/fhir/us/cqfmeasures/StructureDefinition';

export interface PatientResult {
  patientId: string;
  detailedResults?: GroupResult[];
  evaluatedResource?: Resource[];
}

type ReportType = 'individual' | 'subject-list' | 'summary';

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
    const units = results.flatMap((r) => {
      const g = r.detailedResults?.find((d) => d.groupId === groupId) ?? r.detailedResults?.[gi];
      return g ? unitsOf(r.patientId, g) : [];
    });
    const all = tally(units);
    const { observations, subjects } = all;
    const population = (group.population ?? []).map((p) => {
      const id = p.id ?? codeOf(p);
      const obs = observations.get(id) ?? [];
      const out: NonNullable<MeasureReportGroup['population']>[number] = {
        ...(p.id ? { id: p.id } : {}),
        code: { coding: [{ system: POPULATION, code: codeOf(p) }] },
        count: populationCount(p, all),
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
    const score = scoreOf(group, scoring, all);
    const stratifier = (group.stratifier ?? []).map((st, si) => {
      // A stratifier's stratum: the patients (or episodes) its criteria select, counted and scored as the group.
      const t = tally(units.filter((u) => inStratum(u, st, si)));
      const stratumScore = scoreOf(group, scoring, t);
      return {
        ...(st.id ? { id: st.id } : {}),
        ...(st.code ? { code: [st.code] } : {}),
        stratum: [
          {
            value: { text: 'true' },
            population: (group.population ?? []).map((p) => ({
              ...(p.id ? { id: p.id } : {}),
              code: { coding: [{ system: POPULATION, code: codeOf(p) }] },
              count: populationCount(p, t),
            })),
            ...(stratumScore !== undefined ? { measureScore: { value: stratumScore } } : {}),
          },
        ],
      };
    });
    return {
      ...(group.id ? { id: group.id } : {}),
      population,
      ...(score !== undefined ? { measureScore: { value: score } } : {}),
      ...(stratifier.length ? { stratifier } : {}),
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
