import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { OperationOutcomeError, validateResource } from '@medplum/core';
import { conformsFast } from '../src/fhir/validation/structure-fast-path.ts';
import { validate } from '../src/fhir/validation/validate.ts';

// Issue 14 §3: the structure validation's fast path may only say "valid" where @medplum/core's full validation
// finds no error. Checked on every resource in the fixtures, and on mutations of two resources of each type at
// every place in it (removed, nulled, emptied, wrong JS type, bad format, wrapped in or taken out of an array,
// unknown or doubled properties).

type R = Record<string, unknown>;
const FIXTURES = fileURLToPath(new URL('../../../fixtures/', import.meta.url));

function collect(dir: string, out: R[]): R[] {
  for (const f of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, f.name);
    if (f.isDirectory()) collect(p, out);
    else if (f.name.endsWith('.ndjson')) {
      for (const line of readFileSync(p, 'utf8').split('\n')) if (line.trim()) out.push(JSON.parse(line) as R);
    } else if (f.name.endsWith('.json')) {
      const json = JSON.parse(readFileSync(p, 'utf8')) as R & { entry?: { resource?: R }[] };
      if (json.resourceType === 'Bundle') for (const e of json.entry ?? []) e.resource && out.push(e.resource);
      else if (typeof json.resourceType === 'string') out.push(json);
    }
  }
  return out;
}

const resources = collect(FIXTURES, []);

/** medplum's verdict: no issue of severity error. */
function medplumAccepts(resource: R): boolean {
  try {
    validateResource(resource as never);
    return true;
  } catch (err) {
    if (err instanceof OperationOutcomeError)
      return !(err.outcome.issue ?? []).some((i: { severity?: string }) => i.severity === 'error');
    return false;
  }
}

type Path = (string | number)[];

function places(value: unknown, path: Path, out: Path[]): Path[] {
  if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) places(v, [...path, i], out);
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      out.push([...path, k]);
      places(v, [...path, k], out);
    }
  }
  return out;
}

const REPLACEMENTS: unknown[] = [null, '', '  ', [], {}, 'two  spaces', '2020-13-45', -1, 0, 1.5, true, { bogus: 1 }];

/** Every mutant of `resource` at `path`: a fresh copy each. */
function* mutants(resource: R, path: Path): Generator<R> {
  type Node = Record<string | number, unknown>;
  const key = path[path.length - 1] as string | number;
  const at = (copy: R) => path.slice(0, -1).reduce<Node>((o, k) => o[k] as Node, copy as Node);
  const apply = (f: (parent: Node) => void) => {
    const copy = structuredClone(resource);
    f(at(copy));
    return copy;
  };
  const original = at(resource)[key];
  yield apply((p) => delete p[key]);
  for (const r of REPLACEMENTS) yield apply((p) => (p[key] = structuredClone(r)));
  yield apply((p) => (p[key] = Array.isArray(original) ? original[0] : [original]));
  yield apply((p) => (p[key] = Array.isArray(original) ? [...original, ...original] : original));
  if (typeof key === 'string') {
    yield apply((p) => (p.bogus = 1));
    yield apply((p) => (p[`_${key}`] = { extension: [{ url: 'http://example.org/x', valueString: 'x' }] }));
    if (/^value[A-Z]/.test(key)) yield apply((p) => (p.valueString = 'another choice'));
    if (key === 'resourceType') yield apply((p) => (p[key] = 'Quantity'));
  }
}

describe('structure validation fast path', () => {
  validate({ resourceType: 'Basic', code: { text: 'loads the definitions' } });

  test('says valid only where medplum does, and for nearly every fixture resource', () => {
    assert.ok(resources.length > 1000);
    let fast = 0;
    for (const r of resources) {
      const ok = medplumAccepts(r);
      if (conformsFast(r)) {
        fast++;
        assert.ok(ok, `fast path passed ${r.resourceType}/${r.id}, which medplum rejects`);
      }
    }
    // The point of the fast path: the common case takes it (two CQL Libraries with an empty string do not).
    assert.ok(fast >= resources.length * 0.99, `${fast} of ${resources.length}`);
  });

  test('passes no mutation that medplum rejects, at any place of two resources of each type', () => {
    const twoOfEach = new Map<unknown, R[]>();
    for (const r of resources) {
      const some = twoOfEach.get(r.resourceType) ?? [];
      if (some.length < 2 && conformsFast(r)) twoOfEach.set(r.resourceType, [...some, r]);
    }
    assert.ok(twoOfEach.size >= 25, `${twoOfEach.size} types`);
    let tried = 0;
    let passedFast = 0;
    for (const r of [...twoOfEach.values()].flat()) {
      for (const path of places(r, [], [])) {
        for (const m of mutants(r, path)) {
          tried++;
          if (!conformsFast(m)) continue;
          passedFast++;
          assert.ok(
            medplumAccepts(m),
            `fast path passed a mutant medplum rejects at ${r.resourceType}.${path.join('.')}`,
          );
        }
      }
    }
    // Many mutants stay valid (an optional element removed, a repeat doubled): those must still take the fast path.
    assert.ok(tried > 30_000 && passedFast > 3_000, `${tried} mutants, ${passedFast} passed fast`);
  });

  test('what it cannot prove goes to medplum, which words the error (422 with the path)', () => {
    const cases: [R, RegExp][] = [
      [{ resourceType: 'Observation', code: { text: 'x' } }, /status/],
      [{ resourceType: 'Observation', status: 'final', code: { text: 'x' }, valueQuantity: { value: '1' } }, /value/],
      [{ resourceType: 'Patient', birthDate: '2020-13-45' }, /birthDate/],
      [{ resourceType: 'Patient', name: { family: 'x' } }, /name/],
      [{ resourceType: 'Patient', colour: 'blue' }, /colour/],
      [{ resourceType: 'Patient', multipleBirthInteger: 1.5 }, /multipleBirth/],
    ];
    for (const [resource, where] of cases) {
      assert.equal(conformsFast(resource), false);
      assert.throws(
        () => validate(resource),
        (err: { status?: number; message?: string; expression?: string[] }) =>
          err.status === 422 && where.test(`${err.message} ${(err.expression ?? []).join(' ')}`),
      );
    }
  });
});
