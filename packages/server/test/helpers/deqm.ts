import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** fqm-execution's integration-test measures and patients (fixtures/deqm, see fixtures/README.md). */
export const DEQM = fileURLToPath(new URL('../../../../fixtures/deqm/', import.meta.url));
export const PERIOD = { start: '2022-01-01', end: '2022-12-31' };

export const PROPORTION = {
  id: 'measure-ProportionBooleanTest',
  url: 'http://example.com/Measure/measure-ProportionBooleanTest',
  bundle: join(DEQM, 'proportion-boolean', 'measure-bundle.json'),
  /** IPP yes, DENOM no, NUMER no. */
  ipp: 'bccc8f75-cf49-4f9d-be9f-b5f63c247e32',
  /** IPP yes, DENOM yes, NUMER no: the care gap. */
  denom: '22af5434-67a9-4f51-8a74-bf3f2d62141d',
};

export const RATIO = {
  id: 'measure-RatioEncounterReuseObservation',
  url: 'http://example.com/Measure/measure-RatioEncounterReuseObservation',
  bundle: join(DEQM, 'ratio-encounter', 'measure-bundle.json'),
};

type Resource = Record<string, unknown> & { resourceType: string; id: string };
interface PatientBundle {
  file: string;
  patient: string;
  resources: Resource[];
}

/** The patients of one measure folder: the Patient and its clinical resources (not the upstream MeasureReport). */
export function patientsOf(folder: 'proportion-boolean' | 'ratio-encounter'): PatientBundle[] {
  const dir = join(DEQM, folder, 'patients');
  return readdirSync(dir)
    .sort()
    .map((file) => {
      const bundle = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { entry: { resource: Resource }[] };
      const resources = bundle.entry.map((e) => e.resource).filter((r) => r.resourceType !== 'MeasureReport');
      const patient = resources.find((r) => r.resourceType === 'Patient')?.id as string;
      return { file, patient, resources };
    });
}

/** A DEQM $submit-data body: the data-collection MeasureReport of one patient plus its resources. */
export function submission(measure: string, reporter: string, p: PatientBundle): Record<string, unknown> {
  return {
    resourceType: 'Parameters',
    parameter: [
      {
        name: 'measureReport',
        resource: {
          resourceType: 'MeasureReport',
          id: `dc-${p.patient}`,
          status: 'complete',
          type: 'data-collection',
          measure,
          subject: { reference: `Patient/${p.patient}` },
          period: PERIOD,
          reporter: { reference: reporter },
        },
      },
      ...p.resources.map((resource) => ({ name: 'resource', resource })),
    ],
  };
}
