import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { account, type Caller, fhir, grant, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// "Treat every input as hostile": a malformed resource or search is a 4xx OperationOutcome, never a 500. Each
// test sends a few hundred inputs drawn from a fixed seed (so a failure reproduces): Synthea resources with
// values swapped for wrong JSON types, dropped or renamed keys, odd primitives' `_elements`; searches with
// random parameters, modifiers, prefixes and values. The first 500 they found: a string where a primitive's
// `_issued` element belongs (medplum's plain Error, answered as an internal error).

let p: TestPlatform;
let caller: Caller;

/** mulberry32: a small deterministic generator, so every run sends the same inputs. */
function generator(seed: number) {
  let s = seed;
  const next = () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, pick: <T>(a: readonly T[]): T => a[Math.floor(next() * a.length)] as T };
}

const SYNTHEA = new URL(
  '../../../fixtures/synthea/Cris921_Rath779_d4519c92-d241-b2b2-7360-291d60be699e.json',
  import.meta.url,
);
const resources = (
  JSON.parse(readFileSync(SYNTHEA, 'utf8')) as { entry: { resource: Record<string, unknown> }[] }
).entry.map((e) => e.resource);

before(async () => {
  p = await startPlatform();
  await account(p, 'urn:cara:account:h1');
  caller = await secretClient(p, 'hostile', 'system/*.cruds');
  await grant(p, { partition: 'h1', client: 'hostile', scope: 'system/*.cruds' });
  const seeded = await fhir(p, caller, 'PUT', '/h1/Patient/p1', {
    resourceType: 'Patient',
    id: 'p1',
    name: [{ family: 'Hostile' }],
  });
  assert.equal(seeded.status, 201, seeded.text);
});

after(() => p?.stop());

type Answer = { status: number; json: Record<string, unknown>; text: string };

/** Every refusal is a 4xx OperationOutcome; returns what went wrong otherwise. */
function misanswered(r: Answer, what: string): string | undefined {
  if (r.status >= 500) return `${what} → ${r.status} ${r.text.slice(0, 200)}`;
  if (r.status >= 400 && r.json.resourceType !== 'OperationOutcome')
    return `${what} → ${r.status} without an OperationOutcome`;
  return undefined;
}

const WRONG: unknown[] = [
  null,
  0,
  -1,
  1e308,
  1.5,
  '',
  'x',
  true,
  [],
  {},
  [null],
  [[]],
  [{}],
  { x: 1 },
  '\u0000',
  '2020-13-45',
  'ü'.repeat(300),
  { reference: 'Patient/../../x' },
  { reference: 123 },
  { coding: 'x' },
  { coding: [{ system: 5 }] },
  { value: 'NaN' },
  { start: '2020', end: '2019' },
  { extension: [{ url: 5 }] },
  { url: 'http://x', valueString: { x: 1 } },
];
const ODD_KEYS = [
  '',
  'resourceType',
  'id',
  'meta',
  'contained',
  'extension',
  'modifierExtension',
  'text',
  'implicitRules',
];

function mutate(g: ReturnType<typeof generator>, v: unknown, rate: number): unknown {
  if (g.next() < rate) return g.pick(WRONG);
  if (Array.isArray(v)) return v.map((x) => mutate(g, x, rate));
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      if (g.next() < rate / 3) continue;
      // A primitive's `_element` set to the primitive's own value, or a key renamed.
      if (typeof x === 'string' && g.next() < rate) out[`_${k}`] = x;
      const key = g.next() < rate / 4 ? g.pick([`_${k}`, `${k}X`, ...ODD_KEYS]) : k;
      out[key] = k === 'resourceType' ? x : mutate(g, x, rate);
    }
    return out;
  }
  return v;
}

describe('hostile input', () => {
  test('mutated Synthea resources (create, update, transaction) are refused with a 4xx or stored, never a 500', async () => {
    const g = generator(14);
    const wrong: string[] = [];
    let stored = 0;
    for (let i = 0; i < 450; i++) {
      const base = g.pick(resources);
      const rate = g.pick([0.003, 0.01, 0.05]);
      const body = mutate(g, structuredClone(base), rate) as Record<string, unknown>;
      const kind = g.next();
      let r: Answer;
      let what: string;
      if (kind < 0.45) {
        what = `POST ${base.resourceType}`;
        r = await fhir(p, caller, 'POST', `/h1/${base.resourceType}`, body);
      } else if (kind < 0.8) {
        what = `PUT ${base.resourceType}`;
        r = await fhir(p, caller, 'PUT', `/h1/${base.resourceType}/${base.id}`, { ...body, id: base.id });
      } else {
        what = 'transaction';
        r = await fhir(p, caller, 'POST', '/h1', {
          resourceType: 'Bundle',
          type: 'transaction',
          entry: [{ resource: body, request: { method: 'POST', url: String(base.resourceType) } }],
        });
      }
      if (r.status < 300) stored++;
      const bad = misanswered(r, `${what} (input ${i})`);
      if (bad) wrong.push(bad);
    }
    assert.deepEqual(wrong.slice(0, 10), []);
    // The inputs are not all refused: lightly mutated resources still go in (the test reaches the write path).
    assert.ok(stored > 40, `${stored} stored`);
    assert.equal((await fhir(p, caller, 'GET', '/h1/Patient/p1')).status, 200);
  });

  test('random search parameters, modifiers and values are answered with a Bundle or a 4xx, never a 500', async () => {
    const g = generator(2026);
    const VALUES = [
      '',
      'x',
      '-1',
      '1e999',
      'NaN',
      '.5',
      'eq5',
      'ne5',
      'gt2020',
      'lt2020-01-01T00:00:00Z',
      'ge2020-13-45',
      'sa2020',
      'ap5',
      'gt',
      '2020-02-30',
      '2020-01-01T25:00',
      '|',
      'a|b|c',
      'http://loinc.org|8867-4',
      '5||mg',
      'gt5|a|b|c',
      'Patient/',
      'Patient/p1',
      'Patient/p1/_history/1',
      'http://x/Patient/p1',
      "'; DROP TABLE resources; --",
      '%',
      '_',
      '\\',
      '\u0000',
      '😀',
      'a,b',
      ',,',
      'a$b',
      '1$2$3',
      'http://loinc.org|8867-4$gt5',
    ];
    const MODIFIERS = ['', '', ':missing', ':exact', ':contains', ':not', ':text', ':above', ':below', ':in', ':x'];
    const NAMES = [
      '_id',
      '_lastUpdated',
      '_count',
      '_offset',
      '_sort',
      '_elements',
      '_summary',
      '_total',
      '_has:Observation:subject:code',
      '_has:',
      '_filter',
      '_text',
      '_content',
      '_tag',
      '_profile',
      'subject.name',
      'subject:Patient.name',
      'patient._has:Observation:subject:code',
      'code-value-quantity',
      'component-code-value-quantity',
      'combo-value-quantity',
      'value-quantity',
      'date',
      'code',
      'subject',
      'patient',
      'name',
      'birthdate',
      'identifier',
      'category',
      'status',
      'family',
      'address',
      'gender',
      'death-date',
      'near',
      'x',
    ];
    const INCLUDES = ['*', '*:*', 'Observation:*', 'Observation:subject', 'Observation:subject:Group', 'x', ':'];
    const TYPES = ['Patient', 'Observation', 'Condition', 'Encounter', 'MedicationRequest', 'Group', 'Location', 'X'];
    const wrong: string[] = [];
    let answered = 0;
    for (let i = 0; i < 700; i++) {
      const params: string[] = [];
      for (let k = 0, n = 1 + Math.floor(g.next() * 4); k < n; k++) {
        const include = g.next() < 0.1;
        const name = include ? g.pick(['_include', '_revinclude', '_include:iterate']) : g.pick(NAMES);
        const modifier = name.startsWith('_') ? '' : g.pick(MODIFIERS);
        const value = include ? g.pick(INCLUDES) : g.pick(VALUES);
        params.push(`${encodeURIComponent(name + modifier).replace(/%3A/g, ':')}=${encodeURIComponent(value)}`);
      }
      const query = `/h1/${g.pick(TYPES)}?${params.join('&')}`;
      const r = await fhir(p, caller, 'GET', query);
      if (r.status === 200) answered++;
      const bad = misanswered(r, query);
      if (bad) wrong.push(bad);
    }
    assert.deepEqual(wrong.slice(0, 10), []);
    assert.ok(answered > 150, `${answered} answered 200`);
  });

  test('names of JavaScript\u2019s own properties (constructor, __proto__ …) are unknown names like any other, never a 500', async () => {
    const wrong: string[] = [];
    for (const n of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) {
      for (const path of [
        `/h1/Patient?${n}=x`,
        `/h1/Observation?subject.${n}=x`,
        `/h1/Observation?subject:Patient.${n}=x`,
        `/h1/Patient?name:${n}=x`,
        `/h1/Patient?_sort=${n}`,
        `/h1/Patient?_include=Patient:${n}`,
        `/h1/Patient?_revinclude=${n}:subject`,
        `/h1/Patient?_elements=${n}`,
        `/h1/Patient?_summary=${n}`,
        `/h1/Patient?_has:${n}:subject:code=1`,
        `/h1/Patient?_filter=${n} eq x`,
        `/h1/${n}`,
        `/h1/${n}/p1`,
        `/h1/Patient/$${n}`,
        `/h1/?_type=${n}`,
        `/h1/?${n}=x`,
      ]) {
        const bad = misanswered(await fhir(p, caller, 'GET', path), path);
        if (bad) wrong.push(bad);
      }
      const patch = [{ op: n, path: '/active', value: true }];
      const r = await fhir(p, caller, 'PATCH', '/h1/Patient/p1', patch, {
        'content-type': 'application/json-patch+json',
      });
      if (r.status !== 400 || !/op must be one of/.test(JSON.stringify(r.json)))
        wrong.push(`PATCH op ${n}: ${r.status}`);
    }
    for (const key of ['toString', 'valueOf', 'hasOwnProperty']) {
      // The R4 validator looked elements up by name and took these for known ones: stored as part of the Patient.
      const r = await fhir(p, caller, 'POST', '/h1/Patient', {
        resourceType: 'Patient',
        name: [{ family: 'F', [key]: {} }],
      });
      if (r.status !== 400) wrong.push(`a Patient holding "${key}": ${r.status}`);
    }
    // A patch names keys by path or by name, not in its body's keys: the patched resource is checked as a body is.
    const jsonPatch = [{ op: 'add', path: '/toString', value: {} }];
    const byPath = await fhir(p, caller, 'PATCH', '/h1/Patient/p1', jsonPatch, {
      'content-type': 'application/json-patch+json',
    });
    if (byPath.status !== 400) wrong.push(`JSON Patch adding "toString": ${byPath.status}`);
    const fhirPathPatch = {
      resourceType: 'Parameters',
      parameter: [
        {
          name: 'operation',
          part: [
            { name: 'type', valueCode: 'add' },
            { name: 'path', valueString: 'Patient' },
            { name: 'name', valueString: 'valueOf' },
            { name: 'value', valueString: 'x' },
          ],
        },
      ],
    };
    const byName = await fhir(p, caller, 'PATCH', '/h1/Patient/p1', fhirPathPatch, {
      'content-type': 'application/fhir+json',
    });
    if (byName.status !== 400) wrong.push(`FHIRPath Patch adding "valueOf": ${byName.status}`);
    assert.deepEqual(wrong, []);
  });
});
