import type { Library } from 'fhir/r4.js';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';

const DATE_RE = /^\d{4}(-\d{2}(-\d{2})?)?$/;

/**
 * Measure/[id]/$data-requirements (DEQM): a module-definition Library with the data requirements of the
 * Libraries the Measure uses (by canonical URL, in this vault). CQL is not evaluated here: the requirements
 * are those the Libraries declare (as compiled Libraries carry them).
 */
export async function dataRequirements(ctx: FhirContext, measureId: string, params: URLSearchParams): Promise<Library> {
  for (const name of ['periodStart', 'periodEnd']) {
    const v = params.get(name);
    if (v !== null && !DATE_RE.test(v)) throw new FhirError(400, 'invalid', `${name} must be a date (YYYY-MM-DD)`);
  }
  const stored = await ctx.store.resources.current(ctx.partition, 'Measure', measureId);
  if (stored?.content === undefined) throw new FhirError(404, 'not-found', `Measure/${measureId} not found`);
  const measure = JSON.parse(stored.content) as {
    library?: string[];
    effectivePeriod?: { start?: string; end?: string };
  };
  const requirements: NonNullable<Library['dataRequirement']> = [];
  const relatedArtifact: NonNullable<Library['relatedArtifact']> = [];
  for (const canonical of measure.library ?? []) {
    relatedArtifact.push({ type: 'depends-on', resource: canonical });
    const [url, version] = canonical.split('|');
    const { matches } = await ctx.store.resources.search(ctx.partition, {
      type: 'Library',
      filters: [{ kind: 'uri', param: 'url', values: [url as string], mode: 'exact' }],
      sort: [],
      limit: 20,
      offset: 0,
      total: false,
    });
    const lib = matches
      .map((m) => JSON.parse(m.content) as Library)
      .find((l) => version === undefined || l.version === version);
    requirements.push(...(lib?.dataRequirement ?? []));
  }
  return {
    resourceType: 'Library',
    status: 'active',
    type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/library-type', code: 'module-definition' }] },
    ...(relatedArtifact.length ? { relatedArtifact } : {}),
    ...(requirements.length ? { dataRequirement: requirements } : {}),
    extension: [
      {
        url: 'http://hl7.org/fhir/us/cqfmeasures/StructureDefinition/cqfm-effectivePeriod',
        valuePeriod: {
          start: params.get('periodStart') ?? measure.effectivePeriod?.start,
          end: params.get('periodEnd') ?? measure.effectivePeriod?.end,
        },
      },
    ],
  };
}
