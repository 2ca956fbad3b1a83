import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { prepare, stamp } from '../src/fhir/resource-body.ts';
import { compilePath, compileRelative } from '../src/fhir/search/accessor.ts';
import { SEARCH_PARAMETERS } from '../src/fhir/search/definitions.ts';
import { extractIndex } from '../src/fhir/search/extract.ts';

// Issue 14 §3: search expressions that are only a path are read from the JSON directly instead of through
// fhirpath.js. They must give exactly what fhirpath.js gives: checked on every Synthea resource (fixtures/synthea)
// for every search parameter of its type, composite components included.

const require = createRequire(import.meta.url);
const fhirpath = require('fhirpath') as { compile(e: string, m: unknown): (r: unknown) => unknown[] };
const model = require('fhirpath/fhir-context/r4') as unknown;
const DATA = fileURLToPath(new URL('../../../fixtures/synthea/', import.meta.url));
type R = Record<string, unknown> & { resourceType: string; id: string };
const resources = readdirSync(DATA)
  .filter((f) => f.endsWith('.json'))
  .flatMap((f) => (JSON.parse(readFileSync(join(DATA, f), 'utf8')) as { entry: { resource: R }[] }).entry)
  .map((e) => e.resource);
const byFhirpath = new Map<string, (r: unknown) => unknown[]>();
const reference = (expression: string, r: unknown) => {
  let fn = byFhirpath.get(expression);
  if (!fn) {
    fn = fhirpath.compile(expression, model);
    byFhirpath.set(expression, fn);
  }
  return JSON.parse(JSON.stringify(fn(r)));
};

describe('compiled search accessors', () => {
  test('every path expression gives what fhirpath.js gives, on every Synthea resource', () => {
    assert.ok(resources.length >= 1000);
    const expressions = new Set<string>();
    const plain = new Set<string>();
    let compared = 0;
    for (const r of resources) {
      for (const def of Object.values(SEARCH_PARAMETERS[r.resourceType] ?? {})) {
        for (const b of def.branches) {
          expressions.add(b.expression);
          const fn = compilePath(b.expression);
          if (!fn) continue;
          plain.add(b.expression);
          const want = reference(b.expression, r);
          assert.deepEqual(fn(r), want, `${b.expression} on ${r.resourceType}/${r.id}`);
          if (want.length) compared++;
        }
      }
    }
    // The fast path is the common one: all but a handful (where(), resolve(), as) compile.
    assert.ok(plain.size / expressions.size > 0.95, `${plain.size} of ${expressions.size} compile`);
    assert.ok(compared > 8000, `${compared} non-empty comparisons`);
  });

  test('composite components give what fhirpath.js gives on each occurrence of their base', () => {
    let compared = 0;
    for (const r of resources) {
      for (const def of Object.values(SEARCH_PARAMETERS[r.resourceType] ?? {})) {
        if (def.type !== 'composite') continue;
        for (const b of def.branches) {
          const base = compilePath(b.expression);
          if (!base) continue;
          const occurrences = base(r);
          for (const component of def.components ?? []) {
            const fn = compileRelative(base, component.expression);
            if (!fn) continue;
            occurrences.forEach((occurrence, row) => {
              const union = component.expression.split('|').map((p) => `(${b.expression})[${row}].${p.trim()}`);
              const want = reference(union.join(' | '), r);
              assert.deepEqual(fn(occurrence), want, `${component.expression} of ${b.expression}[${row}]`);
              compared++;
            });
          }
        }
      }
    }
    assert.ok(compared > 1000, `${compared} comparisons`);
  });

  test('choice elements, ofType and what only fhirpath.js can do', () => {
    const obs = {
      resourceType: 'Observation',
      effectivePeriod: { start: '2026-01-01' },
      valueQuantity: { value: 1 },
      component: [{ valueString: 'a' }, { valueQuantity: { value: 2 } }, {}],
    };
    assert.deepEqual(compilePath('Observation.effective')?.(obs), [{ start: '2026-01-01' }]);
    assert.deepEqual(compilePath('Observation.value.ofType(Quantity)')?.(obs), [{ value: 1 }]);
    assert.deepEqual(compilePath('Observation.component.value.ofType(Quantity)')?.(obs), [{ value: 2 }]);
    assert.deepEqual(compilePath('Observation.component.value')?.(obs), ['a', { value: 2 }]);
    for (const expression of [
      'Observation.value.ofType(Attachment)', // not one of value[x]'s types
      'Observation.nope',
      "Observation.component.where(code.text = 'x')",
      'Observation.subject.resolve()',
      '(Observation.value as Quantity)',
      'Observation.effective.start', // a step after an unresolved choice
    ]) {
      assert.equal(compilePath(expression), undefined, expression);
    }
  });

  test("a union of one choice element's types compiles, and gives what fhirpath.js gives", () => {
    const base = compilePath('Observation') as NonNullable<ReturnType<typeof compilePath>>;
    const date = compileRelative(base, 'value.ofType(dateTime) | value.ofType(Period)');
    assert.ok(date, "code-value-date's value component compiles");
    for (const obs of [
      { resourceType: 'Observation', valueDateTime: '2026-03-04T05:06:07Z' },
      { resourceType: 'Observation', valuePeriod: { start: '2026-01-01', end: '2026-02-01' } },
      { resourceType: 'Observation', valueQuantity: { value: 3 } },
      { resourceType: 'Observation' },
    ]) {
      const want = reference('(Observation)[0].value.ofType(dateTime) | (Observation)[0].value.ofType(Period)', obs);
      assert.deepEqual(date(obs), want, JSON.stringify(obs));
    }
    assert.deepEqual(date({ valuePeriod: { start: '2026-01-01' } }), [{ start: '2026-01-01' }]);
    // Parts that could give equal values, or are not all one choice element's types, stay with fhirpath.js.
    for (const expression of [
      'value.ofType(Quantity) | value.ofType(Quantity)',
      'value.ofType(Quantity) | code',
      'code | category',
    ]) {
      assert.equal(compileRelative(base, expression), undefined, expression);
    }
    // The composite index of such a parameter is the same either way.
    const obs = {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '1-8' }] },
      valueDateTime: '2026-03-04',
    };
    const rows = extractIndex(obs).composite.filter((r) => r.param === 'code-value-date');
    assert.deepEqual(
      rows.map((r) => [r.comp, r.code, r.system, r.lo !== null]),
      [
        [0, '1-8', 'http://loinc.org', false],
        [1, null, null, true],
      ],
    );
  });

  // Writes serialize and index a resource before the write lock, when its version and time are not yet known
  // (resource-body.ts): that is only right while no search parameter reads meta.versionId or meta.lastUpdated.
  test('a resource indexed before it is stamped has the index of the stored resource, on every Synthea resource', () => {
    for (const r of resources) {
      const { content, index } = stamp(prepare(r, r.id), 7, '2026-12-03T04:05:06.789Z');
      assert.deepEqual(
        index,
        extractIndex(JSON.parse(content) as Record<string, unknown>),
        `${r.resourceType}/${r.id}`,
      );
    }
  });

  test('stamping puts the server’s id, versionId and lastUpdated first and keeps the rest of meta', () => {
    const body = {
      resourceType: 'Observation',
      id: 'chosen-by-client',
      status: 'final',
      meta: { source: 'urn:s', versionId: '99', tag: [{ code: 't' }], lastUpdated: '1999-01-01T00:00:00Z' },
      code: { text: 'x' },
    };
    const { content } = stamp(prepare(body, 'server-id'), 3, '2026-12-03T04:05:06.789Z');
    assert.equal(
      content,
      '{"resourceType":"Observation","id":"server-id","meta":{"versionId":"3","lastUpdated":"2026-12-03T04:05:06.789Z",' +
        '"source":"urn:s","tag":[{"code":"t"}]},"status":"final","code":{"text":"x"}}',
    );
    assert.equal(body.meta.versionId, '99', 'the request body is left as it was');
    const bare = stamp(prepare({ resourceType: 'Patient' }, 'p'), 1, '2026-12-03T04:05:06.789Z').content;
    assert.equal(
      bare,
      '{"resourceType":"Patient","id":"p","meta":{"versionId":"1","lastUpdated":"2026-12-03T04:05:06.789Z"}}',
    );
  });
});
