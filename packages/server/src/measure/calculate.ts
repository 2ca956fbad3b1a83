import { randomUUID } from 'node:crypto';
import type { Bundle, Library, MeasureReport, Parameters } from 'fhir/r4.js';
import type { FhirContext } from '../fhir/context.ts';
import { FhirError } from '../fhir/errors.ts';
import { ID_RE } from '../fhir/resource-types.ts';
import { loadMeasure, type MeasureArtifacts } from './artifacts.ts';
import { type FqmBundle, type FqmOptions, runEngine } from './engine.ts';
import { patientData, type Subject, subjectOf, subjectPatients } from './patient-data.ts';
import { checkPeriodSyntax, measurementPeriod } from './period.ts';
import { measureReport, type PatientResult } from './report.ts';

type ReportType = 'individual' | 'subject-list' | 'summary';
const REPORT_TYPES: Record<string, ReportType> = {
  individual: 'individual',
  subject: 'individual',
  population: 'summary',
  summary: 'summary',
  'subject-list': 'subject-list',
};

/** What the engine refused becomes a 422 naming the measure; its text is CQL diagnostics, safe to show. */
async function engine<T>(what: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof FhirError) throw err;
    const message = String((err as Error)?.message ?? err)
      .replace(/\s+/g, ' ')
      .trim()
      .slice(0, 600);
    // The engine process sends its errors' class names along.
    const unsupported = (err as Error)?.name === 'UnsupportedProperty';
    throw new FhirError(422, unsupported ? 'not-supported' : 'processing', `${what}: ${message}`);
  }
}

const asFqm = (b: Bundle) => b as unknown as FqmBundle;
const options = (period: { start: string; end: string }, extra: FqmOptions = {}): FqmOptions => ({
  measurementPeriodStart: period.start,
  measurementPeriodEnd: period.end,
  calculateHTML: false,
  ...extra,
});

/** The resource types a measure's logic retrieves (from fqm-execution's data requirements). */
async function requiredTypes(a: MeasureArtifacts, period: { start: string; end: string }): Promise<string[]> {
  const lib = await dataRequirementsLibrary(a, period);
  return [...new Set((lib.dataRequirement ?? []).map((d) => d.type))];
}

async function dataRequirementsLibrary(a: MeasureArtifacts, period: { start: string; end: string }): Promise<Library> {
  const out = await engine(`data requirements of Measure/${a.measure.id}`, () =>
    runEngine<{ results: unknown }>('calculateDataRequirements', asFqm(a.bundle), options(period)),
  );
  return out.results as unknown as Library;
}

/** Measure/[id]/$data-requirements: computed from the ELM, with the period it was computed for. */
export async function dataRequirements(ctx: FhirContext, measureId: string, params: URLSearchParams): Promise<Library> {
  checkPeriodSyntax(params);
  const a = await loadMeasure(ctx, measureId, { valueSets: false });
  const period = measurementPeriod(params, a.measure.effectivePeriod);
  const lib = await dataRequirementsLibrary(a, period);
  return {
    ...lib,
    status: 'active',
    relatedArtifact: [
      ...(a.measure.library ?? []).map((resource) => ({ type: 'depends-on' as const, resource })),
      ...(lib.relatedArtifact ?? []).filter((r) => !a.measure.library?.includes(r.resource ?? '')),
    ],
    extension: [
      ...(lib.extension ?? []),
      {
        url: 'http://hl7.org/fhir/us/cqfmeasures/StructureDefinition/cqfm-effectivePeriod',
        valuePeriod: { start: period.start, end: period.end },
      },
    ],
  };
}

export interface Evaluation {
  report: MeasureReport;
  /** Patients whose records were read (for the audit event). */
  patients: string[];
}

/** The subject parameter of a measure operation, when given. */
const subjectParam = (params: URLSearchParams): Subject | undefined => {
  const subject = params.get('subject');
  return subject ? subjectOf(subject) : undefined;
};

/** The patients of `subject` (all of the vault when none), read with the data the measure needs. */
async function dataOf(
  ctx: FhirContext,
  a: MeasureArtifacts,
  period: { start: string; end: string },
  subject: Subject | undefined,
  mayRead: (type: string) => void,
) {
  const ids = await subjectPatients(ctx, subject, period, mayRead);
  const single = subject !== undefined && 'patient' in subject;
  return patientData(ctx, await requiredTypes(a, period), ids && { ids, single }, mayRead);
}

/** Measure/[id]/$evaluate-measure over this vault's patients, one Patient, or a Group's members. */
export async function evaluateMeasure(
  ctx: FhirContext,
  measureId: string,
  params: URLSearchParams,
  mayRead: (type: string) => void,
): Promise<Evaluation> {
  const subject = subjectParam(params);
  const onePatient = subject !== undefined && 'patient' in subject;
  const requested = params.get('reportType') ?? (onePatient ? 'individual' : 'population');
  const reportType = Object.hasOwn(REPORT_TYPES, requested) ? REPORT_TYPES[requested] : undefined;
  if (!reportType) {
    throw new FhirError(400, 'value', `reportType ${requested} is not one of individual, subject-list, population`);
  }
  if (reportType === 'individual' && !onePatient) {
    throw new FhirError(400, 'required', 'an individual report needs a subject (Patient/<id>)');
  }
  checkPeriodSyntax(params);
  const a = await loadMeasure(ctx, measureId);
  const period = measurementPeriod(params, a.measure.effectivePeriod);
  const data = await dataOf(ctx, a, period, subject, mayRead);
  const patients = data.bundles.map((b) => `Patient/${b.entry?.[0]?.resource?.id}`);
  const out =
    data.bundles.length === 0
      ? { results: [] }
      : await engine(`Measure/${measureId} could not be evaluated`, () =>
          runEngine<{ results: unknown }>(
            'calculate',
            asFqm(a.bundle),
            data.bundles.map(asFqm),
            options(period, { verboseCalculationResults: false }),
          ),
        );
  const group = subject && 'group' in subject ? `Group/${subject.group}` : undefined;
  const results = out.results as unknown as PatientResult[];
  const report = measureReport(a.measure, results, reportType, period, group);
  return { report, patients };
}

/**
 * Measure/$care-gaps (DEQM gaps-in-care): for every patient with an open gap in one of the measures, a
 * document Bundle (Composition, the gap MeasureReport, DetectedIssues), as `return` parameters.
 */
export async function careGaps(
  ctx: FhirContext,
  params: URLSearchParams,
  mayRead: (type: string) => void,
): Promise<{ result: Parameters; patients: string[] }> {
  const status = params.get('status');
  if (status !== 'open-gap') {
    throw new FhirError(
      400,
      status ? 'not-supported' : 'required',
      'status=open-gap is required (closed-gap is not supported)',
    );
  }
  const ids = params.getAll('measureId').flatMap((v) => v.split(','));
  if (ids.length === 0) throw new FhirError(400, 'required', 'measureId is required');
  for (const id of ids) if (!ID_RE.test(id)) throw new FhirError(400, 'value', `measureId ${id} is not an id`);
  const subject = subjectParam(params);
  checkPeriodSyntax(params);
  const parameter: NonNullable<Parameters['parameter']> = [];
  const patients = new Set<string>();
  for (const id of ids) {
    const a = await loadMeasure(ctx, id);
    const period = measurementPeriod(params, a.measure.effectivePeriod);
    const data = await dataOf(ctx, a, period, subject, mayRead);
    for (const b of data.bundles) patients.add(`Patient/${b.entry?.[0]?.resource?.id}`);
    if (data.bundles.length === 0) continue;
    const out = await engine(`gaps in care for Measure/${id}`, () =>
      runEngine<{ results: unknown }>('calculateGapsInCare', asFqm(a.bundle), data.bundles.map(asFqm), options(period)),
    );
    const gaps = (Array.isArray(out.results) ? out.results : [out.results]) as unknown as Bundle[];
    for (const doc of gaps) {
      if (doc?.resourceType !== 'Bundle') continue;
      const timestamp = new Date().toISOString();
      parameter.push({
        name: 'return',
        resource: {
          ...doc,
          id: randomUUID(),
          identifier: { system: 'urn:ietf:rfc:3986', value: `urn:uuid:${randomUUID()}` },
          timestamp,
        },
      });
    }
  }
  return { result: { resourceType: 'Parameters', parameter }, patients: [...patients] };
}
