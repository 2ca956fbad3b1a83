import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { PERIOD, PROPORTION, patientsOf } from './helpers/deqm.ts';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// The measure engine's process (measure/engine.ts): logic a client stored in a Library runs with a heap limit
// (here CAREVAULT_MEASURE_MEMORY_MB=64) off the event loop; what outgrows it is 422, and the server goes on. On
// Node 24 a worker thread that outgrew its limit this way took the whole test process with it.
let p: TestPlatform;
let writer: Caller;

type Json = Record<string, unknown>;
const INTEGER = '{urn:hl7-org:elm-types:r1}Integer';

/**
 * The proportion measure with its `ipp` statement replaced by `exists (expand { Interval[1, 50000000] })`:
 * valid ELM that builds fifty million integers for every patient.
 */
function bombMeasure(): Json[] {
  const bundle = JSON.parse(readFileSync(PROPORTION.bundle, 'utf8')) as { entry: { resource: Json }[] };
  return bundle.entry.map(({ resource }) => {
    const r = structuredClone(resource);
    if (r.resourceType === 'Measure') {
      r.id = 'bomb';
      r.url = 'http://example.com/Measure/bomb';
      r.library = ['http://example.com/Library/bomb'];
    }
    if (r.resourceType === 'Library' && r.id === 'library-ProportionBooleanTest') {
      r.id = 'bomb';
      r.url = 'http://example.com/Library/bomb';
      for (const c of r.content as { contentType: string; data: string }[]) {
        if (c.contentType !== 'application/elm+json') continue;
        const elm = JSON.parse(Buffer.from(c.data, 'base64').toString('utf8'));
        const ipp = elm.library.statements.def.find((d: { name: string }) => d.name === 'ipp');
        const literal = (value: string) => ({ type: 'Literal', valueType: INTEGER, value });
        ipp.expression = {
          type: 'Exists',
          operand: {
            type: 'Expand',
            operand: [
              {
                type: 'List',
                element: [
                  { type: 'Interval', lowClosed: true, highClosed: true, low: literal('1'), high: literal('50000000') },
                ],
              },
              { type: 'Null' },
            ],
          },
        };
        c.data = Buffer.from(JSON.stringify(elm)).toString('base64');
      }
    }
    return r;
  });
}

before(async () => {
  p = await startPlatform(
    {},
    { env: { CAREVAULT_MEASURE_MEMORY_MB: '64', CAREVAULT_MEASURE_TIMEOUT: '60', CAREVAULT_MEASURE_IDLE: '1' } },
  );
  await partition(p, 'quality');
  writer = await secretClient(p, 'measure-writer', 'system/*.cruds');
  await grant(p, { partition: 'quality', client: 'measure-writer', scope: 'system/*.cruds' });
  const entries = [
    ...(JSON.parse(readFileSync(PROPORTION.bundle, 'utf8')) as { entry: { resource: Json }[] }).entry.map(
      (e) => e.resource,
    ),
    ...bombMeasure().filter((r) => r.id === 'bomb'),
    ...(patientsOf('proportion-boolean')[0]?.resources ?? []),
  ];
  const r = await fhir(p, writer, 'POST', '/quality', {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: entries.map((resource) => ({
      resource,
      request: { method: 'PUT', url: `${resource.resourceType}/${resource.id}` },
    })),
  });
  assert.equal(r.status, 200, r.text);
});
after(() => p.stop());

const evaluate = (measure: string) =>
  fhir(
    p,
    writer,
    'GET',
    `/quality/Measure/${measure}/$evaluate-measure?periodStart=${PERIOD.start}&periodEnd=${PERIOD.end}`,
  );

describe('the measure engine process', () => {
  test('logic that outgrows the heap limit is 422 too-costly; reads go on meanwhile, and the next calculation works', async () => {
    const bomb = evaluate('bomb');
    // While it runs, the server answers: the calculation is not on its event loop.
    const started = performance.now();
    const read = await fhir(p, writer, 'GET', `/quality/Measure/${PROPORTION.id}`);
    assert.equal(read.status, 200);
    const readMs = performance.now() - started;
    const r = await bomb;
    assert.equal(r.status, 422, r.text);
    const issue = (r.json as { issue: { code: string; diagnostics: string }[] }).issue[0];
    assert.equal(issue?.code, 'too-costly');
    assert.match(issue?.diagnostics ?? '', /needed more than 64 MB/);
    assert.ok(readMs < 2000, `a read during the calculation took ${readMs.toFixed(0)} ms`);
    const good = await evaluate(PROPORTION.id);
    assert.equal(good.status, 200, good.text);
    const population = (good.json as { group: { population: { count: number }[] }[] }).group[0]?.population[0];
    assert.equal(population?.count, 1);
  });

  test('an engine process with nothing to calculate ends after CAREVAULT_MEASURE_IDLE; the next calculation starts one', async () => {
    assert.equal((await evaluate(PROPORTION.id)).status, 200);
    assert.equal(engines().length, 1, 'kept between calculations');
    for (let i = 0; i < 50 && engines().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(engines(), [], 'ended after a second without work');
    const again = await evaluate(PROPORTION.id);
    assert.equal(again.status, 200, again.text);
    assert.equal(engines().length, 1);
  });
});

/** The measure engine processes this process (whose platform runs in it) started. */
function engines(): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        const ppid = Number(readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]);
        return ppid === process.pid && readFileSync(`/proc/${d}/cmdline`, 'utf8').includes('engine-worker');
      } catch {
        return false;
      }
    })
    .map(Number);
}
