import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type FhirClient, MeasureDataError, queriesFromRequirements } from '../src/index.ts';

// The query-building rules of submitMeasureData; the whole exchange runs between two real servers in
// packages/server/test/deqm-client.test.ts.
const valueSets: Record<string, Record<string, unknown>> = {
  'http://example.com/expanded': {
    resourceType: 'ValueSet',
    expansion: {
      contains: [
        { system: 'http://snomed.info/sct', code: '1' },
        { system: 'http://snomed.info/sct', code: '2' },
      ],
    },
  },
  'http://example.com/composed': {
    resourceType: 'ValueSet',
    compose: { include: [{ system: 'http://loinc.org', concept: [{ code: '8867-4' }] }] },
  },
  'http://example.com/intensional': {
    resourceType: 'ValueSet',
    compose: { include: [{ system: 'http://loinc.org', filter: [{ property: 'class', op: '=', value: 'x' }] }] },
  },
};
const terminology = {
  async search(_type: string, params: { url: string }) {
    const vs = valueSets[params.url];
    return { resourceType: 'Bundle', type: 'searchset', entry: vs ? [{ resource: vs }] : [] };
  },
} as unknown as FhirClient;
const period = { start: '2022-01-01', end: '2022-12-31' };

describe('queriesFromRequirements', () => {
  test('ValueSet codes, fixed codes (no system on `code` elements), the period on the date parameter', async () => {
    const queries = await queriesFromRequirements(
      [
        {
          type: 'Procedure',
          codeFilter: [
            { path: 'code', valueSet: 'http://example.com/expanded' },
            { path: 'status', code: [{ system: 'http://hl7.org/fhir/event-status', code: 'completed' }] },
          ],
          dateFilter: [{ path: 'performed' }],
        },
        { type: 'Observation', codeFilter: [{ path: 'code', valueSet: 'http://example.com/composed' }] },
        { type: 'Observation', codeFilter: [{ path: 'code', valueSet: 'http://example.com/composed' }] },
        { type: 'Patient' },
        { type: 'bad type!' },
      ],
      terminology,
      period,
    );
    assert.deepEqual(queries, [
      {
        type: 'Procedure',
        params: [
          ['code', 'http://snomed.info/sct|1,http://snomed.info/sct|2'],
          ['status', 'completed'],
          ['date', 'ge2022-01-01'],
          ['date', 'le2022-12-31'],
        ],
      },
      { type: 'Observation', params: [['code', 'http://loinc.org|8867-4']] },
    ]);
  });

  test('a ValueSet the receiving server lacks, or one defined by filters only, is a clear error', async () => {
    await assert.rejects(
      queriesFromRequirements(
        [{ type: 'Condition', codeFilter: [{ path: 'code', valueSet: 'http://example.com/none' }] }],
        terminology,
        period,
      ),
      (e: Error) => e instanceof MeasureDataError && /has no ValueSet http:\/\/example.com\/none/.test(e.message),
    );
    await assert.rejects(
      queriesFromRequirements(
        [{ type: 'Condition', codeFilter: [{ path: 'code', valueSet: 'http://example.com/intensional' }] }],
        terminology,
        period,
      ),
      (e: Error) => e instanceof MeasureDataError && /no expansion or explicit codes/.test(e.message),
    );
  });
});
