import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Caller, fhir, grantedClient, partition } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// The terminology operations on what a vault holds: $lookup and $validate-code on its CodeSystems and ValueSets,
// and ValueSets that include all of a CodeSystem stored beside them.
let p: TestPlatform;
let writer: Caller;
const COLORS = 'http://example.org/cs/colors';
const SHAPES = 'http://example.org/cs/shapes';
const TASTES = 'http://example.org/cs/tastes';
const VS = 'http://example.org/vs';
type Param = { name: string; valueBoolean?: boolean; valueString?: string; valueCode?: string; part?: Param[] };
type Obj = Record<string, unknown>;

async function put(resource: Obj, vault = 'tx') {
  const r = await fhir(p, writer, 'PUT', `/${vault}/${resource.resourceType}/${resource.id}`, resource);
  assert.ok(r.status === 200 || r.status === 201, r.text);
}

async function call(method: string, path: string, body?: Obj, caller = writer) {
  const r = await fhir(p, caller, method, `/tx/${path}`, body);
  return {
    status: r.status,
    text: r.text,
    parameter: ((r.json as { parameter?: Param[] })?.parameter ?? []) as Param[],
  };
}

/** A Parameters answer as name → value, each property or designation as a short line. */
function answer(parameter: Param[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const p of parameter) {
    const value = p.part
      ? p.part.map((x) => `${x.name}=${x.valueCode ?? x.valueString ?? x.valueBoolean ?? JSON.stringify(x)}`).join(' ')
      : (p.valueBoolean ?? p.valueString ?? p.valueCode);
    out[p.name] = p.part ? [...((out[p.name] as string[]) ?? []), value] : value;
  }
  return out;
}

const params = (...parameter: Obj[]) => ({ resourceType: 'Parameters', parameter });
const valueSet = (id: string, include: Obj[]) => ({
  resourceType: 'ValueSet',
  id,
  url: `${VS}/${id}`,
  status: 'active',
  compose: { include },
});

before(async () => {
  p = await startPlatform();
  await partition(p, 'tx');
  await partition(p, 'other-tx');
  writer = await grantedClient(p, 'tx-writer', 'system/*.cruds', ['tx', 'other-tx']);
  await put({
    resourceType: 'CodeSystem',
    id: 'colors',
    url: COLORS,
    version: '1',
    name: 'Colors',
    status: 'active',
    content: 'complete',
    caseSensitive: true,
    property: [
      { code: 'notSelectable', type: 'boolean' },
      { code: 'hex', type: 'string' },
    ],
    concept: [
      {
        code: 'warm',
        display: 'Warm colours',
        property: [{ code: 'notSelectable', valueBoolean: true }],
        concept: [
          { code: 'red', display: 'Red', designation: [{ language: 'nl', value: 'Rood' }] },
          { code: 'orange', display: 'Orange' },
        ],
      },
      {
        code: 'blue',
        display: 'Blue',
        definition: 'The colour of the sky',
        property: [{ code: 'hex', valueString: '#00f' }],
      },
    ],
  });
  await put({
    resourceType: 'CodeSystem',
    id: 'shapes',
    url: SHAPES,
    status: 'active',
    content: 'fragment',
    concept: [{ code: 'circle' }],
  });
  const parent = (code: string) => ({ code: 'parent', valueCode: code });
  await put({
    resourceType: 'CodeSystem',
    id: 'tastes',
    url: TASTES,
    status: 'active',
    content: 'complete',
    hierarchyMeaning: 'is-a',
    property: [{ code: 'parent', type: 'code' }],
    concept: [
      { code: 'taste' },
      { code: 'sweet', property: [parent('taste')] },
      { code: 'honey', property: [parent('sweet')] },
      { code: 'bitter', property: [parent('taste')] },
    ],
  });
  await put({
    resourceType: 'CodeSystem',
    id: 'grouped',
    url: 'http://example.org/cs/grouped',
    status: 'active',
    content: 'complete',
    hierarchyMeaning: 'grouped-by',
    concept: [{ code: 'group', concept: [{ code: 'member' }] }],
  });
  await put({
    resourceType: 'CodeSystem',
    id: 'loop',
    url: 'http://example.org/cs/loop',
    status: 'active',
    content: 'complete',
    property: [{ code: 'parent', type: 'code' }],
    concept: [{ code: 'a', property: [parent('b')] }, { code: 'b', property: [parent('a')] }, { code: 'c' }],
  });
  await put(valueSet('all-colors', [{ system: COLORS }]));
  await put(valueSet('red-only', [{ system: COLORS, concept: [{ code: 'red', display: 'Red' }] }]));
  await put(valueSet('all-shapes', [{ system: SHAPES }]));
  await put(valueSet('all-loinc', [{ system: 'http://loinc.org' }]));
  for (const [id, code] of [
    ['o-red', 'red'],
    ['o-blue', 'blue'],
    ['o-warm', 'warm'],
  ]) {
    await put({ resourceType: 'Observation', id, status: 'final', code: { coding: [{ system: COLORS, code }] } });
  }
  for (const [id, code] of [
    ['o-honey', 'honey'],
    ['o-bitter', 'bitter'],
  ]) {
    await put({ resourceType: 'Observation', id, status: 'final', code: { coding: [{ system: TASTES, code }] } });
  }
  await put(valueSet('all-colors', [{ system: COLORS }]), 'other-tx');
});
after(() => p.stop());

describe('ValueSets of a whole CodeSystem held here', () => {
  test('expand to its selectable concepts, for $expand and :in; others are a 400 that says why', async () => {
    const r = await fhir(p, writer, 'GET', `/tx/ValueSet/all-colors/$expand`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual((r.json as { expansion: { contains: Obj[] } }).expansion.contains, [
      { system: COLORS, code: 'red', display: 'Red' },
      { system: COLORS, code: 'orange', display: 'Orange' },
      { system: COLORS, code: 'blue', display: 'Blue' },
    ]);
    const found = await fhir(p, writer, 'GET', `/tx/Observation?code:in=${VS}/all-colors`);
    assert.deepEqual(
      ((found.json as { entry: { resource: { id: string } }[] }).entry ?? []).map((e) => e.resource.id).sort(),
      ['o-blue', 'o-red'],
    );
    for (const [id, message] of [
      [
        'all-shapes',
        /includes all of http:\/\/example.org\/cs\/shapes, whose CodeSystem here is not complete \(content fragment\)/,
      ],
      ['all-loinc', /includes all of http:\/\/loinc.org, which this vault has no CodeSystem of/],
    ] as const) {
      const refused = await fhir(p, writer, 'GET', `/tx/ValueSet/${id}/$expand`);
      assert.equal(refused.status, 400, refused.text);
      assert.match(refused.text, message);
    }
    // Reading a CodeSystem for a ValueSet needs CodeSystem read.
    const valueSetsOnly = await grantedClient(p, 'tx-vs-only', 'system/ValueSet.rs', ['tx']);
    const denied = await fhir(p, valueSetsOnly, 'GET', '/tx/ValueSet/all-colors/$expand');
    assert.equal(denied.status, 403, denied.text);
    assert.match(denied.text, /\$expand reads CodeSystem resources/);
    assert.equal((await fhir(p, valueSetsOnly, 'GET', '/tx/ValueSet/red-only/$expand')).status, 200);
  });

  test('filters select from the hierarchy and the properties; filters of one include all apply; :in uses them', async () => {
    const made: string[] = [];
    const selected = async (system: string, ...filter: Obj[]) => {
      const id = `filter-${made.push(`filter-${made.length + 1}`)}`;
      await put(valueSet(id, [{ system, filter }]));
      const r = await fhir(p, writer, 'GET', `/tx/ValueSet/${id}/$expand`);
      if (r.status !== 200) return r.text;
      return ((r.json as { expansion: { contains?: { code: string }[] } }).expansion.contains ?? []).map((c) => c.code);
    };
    const f = (property: string, op: string, value: string) => ({ property, op, value });
    assert.deepEqual(await selected(TASTES, f('concept', 'is-a', 'sweet')), ['sweet', 'honey']);
    assert.deepEqual(await selected(TASTES, f('concept', 'descendent-of', 'taste')), ['sweet', 'honey', 'bitter']);
    assert.deepEqual(await selected(TASTES, f('concept', 'is-not-a', 'sweet')), ['taste', 'bitter']);
    assert.deepEqual(await selected(TASTES, f('concept', 'generalizes', 'honey')), ['taste', 'sweet', 'honey']);
    assert.deepEqual(
      await selected(TASTES, f('concept', 'descendent-of', 'taste'), f('concept', 'not-in', 'bitter,honey')),
      ['sweet'],
    );
    // A notSelectable concept is selected by no filter; nesting is a hierarchy as parent properties are.
    assert.deepEqual(await selected(COLORS, f('concept', 'is-a', 'warm')), ['red', 'orange']);
    assert.deepEqual(await selected(COLORS, f('hex', '=', '#00f')), ['blue']);
    assert.deepEqual(await selected(COLORS, f('hex', 'exists', 'false')), ['red', 'orange']);
    assert.deepEqual(await selected(COLORS, f('code', 'in', 'red,blue,purple')), ['red', 'blue']);
    assert.deepEqual(await selected('http://example.org/cs/loop', f('concept', 'is-a', 'a')), ['a', 'b']);
    assert.match(
      String(await selected(COLORS, f('display', 'regex', '^(a+)+$'))),
      /operator regex: that needs a terminology server/,
    );
    assert.match(String(await selected(COLORS, f('hex', 'is-a', 'x'))), /applies to concept only/);
    assert.match(
      String(await selected(SHAPES, f('concept', 'is-a', 'circle'))),
      /filters .*shapes, whose CodeSystem here is not complete/,
    );

    await put(valueSet('sweet-things', [{ system: TASTES, filter: [f('concept', 'is-a', 'sweet')] }]));
    const found = await fhir(p, writer, 'GET', `/tx/Observation?code:in=${VS}/sweet-things`);
    assert.deepEqual(
      ((found.json as { entry?: { resource: { id: string } }[] }).entry ?? []).map((e) => e.resource.id),
      ['o-honey'],
    );
    const both = valueSet('both', [
      { system: TASTES, concept: [{ code: 'sweet' }], filter: [f('concept', 'is-a', 'sweet')] },
    ]);
    // vsd-3: concepts and a filter in one include are refused when written.
    const refused = await fhir(p, writer, 'PUT', '/tx/ValueSet/both', both);
    assert.equal(refused.status, 422, refused.text);
    assert.match(refused.text, /vsd-3/);
    // The other tests list the vault's ValueSets.
    for (const id of [...made, 'sweet-things']) await fhir(p, writer, 'DELETE', `/tx/ValueSet/${id}`);
  });
});

describe('ValueSet $validate-code', () => {
  test('a code in the expansion is true with its display; one outside is false with a message', async () => {
    const at = `ValueSet/$validate-code?url=${VS}/all-colors&system=${COLORS}`;
    assert.deepEqual(answer((await call('GET', `${at}&code=red`)).parameter), { result: true, display: 'Red' });
    assert.deepEqual(answer((await call('GET', `${at}&code=warm`)).parameter), {
      result: false,
      message: `${COLORS}|warm is not in ValueSet ${VS}/all-colors`,
    });
    assert.deepEqual(answer((await call('GET', `${at}&code=red&display=Rouge`)).parameter), {
      result: true,
      message: `the display of ${COLORS}|red is "Red", not "Rouge"`,
      display: 'Red',
    });
    assert.equal(
      answer((await call('GET', `ValueSet/red-only/$validate-code?system=${COLORS}&code=blue`)).parameter).result,
      false,
    );
    // POST: a coding; a CodeableConcept of which any coding may match.
    const coding = await call(
      'POST',
      'ValueSet/red-only/$validate-code',
      params({ name: 'coding', valueCoding: { system: COLORS, code: 'red' } }),
    );
    assert.deepEqual(answer(coding.parameter), { result: true, display: 'Red' });
    const concept = (...coding: Obj[]) =>
      call(
        'POST',
        `ValueSet/$validate-code?url=${VS}/all-colors`,
        params({ name: 'codeableConcept', valueCodeableConcept: { coding } }),
      );
    assert.deepEqual(
      answer((await concept({ system: 'urn:x', code: 'red' }, { system: COLORS, code: 'blue' })).parameter),
      {
        result: true,
        display: 'Blue',
      },
    );
    assert.deepEqual(
      answer((await concept({ system: 'urn:x', code: 'red' }, { system: COLORS, code: 'warm' })).parameter),
      {
        result: false,
        message: `none of urn:x|red, ${COLORS}|warm is in ValueSet ${VS}/all-colors`,
      },
    );
  });

  test('refused with a reason: no system, two codes, unknown parameter, no ValueSet, another vault, no read', async () => {
    for (const [method, path, body, status, message] of [
      ['GET', `ValueSet/$validate-code?url=${VS}/all-colors&code=red`, undefined, 400, /a code needs its system/],
      [
        'POST',
        `ValueSet/$validate-code?url=${VS}/all-colors&system=${COLORS}&code=red`,
        params({ name: 'coding', valueCoding: { system: COLORS, code: 'red' } }),
        400,
        /takes one of code \(with system\), coding or codeableConcept/,
      ],
      [
        'GET',
        `ValueSet/$validate-code?url=${VS}/all-colors&system=${COLORS}&code=red&date=2020`,
        undefined,
        400,
        /not date/,
      ],
      ['GET', `ValueSet/$validate-code?system=${COLORS}&code=red`, undefined, 400, /give the ValueSet/],
      [
        'GET',
        `ValueSet/all-colors/$validate-code?url=${VS}/x&system=${COLORS}&code=red`,
        undefined,
        400,
        /takes no url/,
      ],
      [
        'GET',
        `ValueSet/$validate-code?url=${VS}/nowhere&system=${COLORS}&code=red`,
        undefined,
        400,
        /no ValueSet .*nowhere in this vault/,
      ],
      [
        'POST',
        'ValueSet/red-only/$validate-code',
        params({ name: 'coding', valueString: 'red' }),
        400,
        /coding takes a valueCoding/,
      ],
      [
        'GET',
        `ValueSet/red-only/$validate-code?coding=${COLORS}|red`,
        undefined,
        400,
        /coding is a data type, given in a POST/,
      ],
    ] as const) {
      const r = await call(method, path, body);
      assert.equal(r.status, status, `${path}: ${r.text}`);
      assert.match(r.text, message, path);
    }
    const elsewhere = await fhir(
      p,
      writer,
      'GET',
      `/other-tx/ValueSet/red-only/$validate-code?system=${COLORS}&code=red`,
    );
    assert.equal(elsewhere.status, 400, elsewhere.text);
    const observationsOnly = await grantedClient(p, 'tx-obs', 'system/Observation.rs', ['tx']);
    const denied = await call(
      'GET',
      `ValueSet/red-only/$validate-code?system=${COLORS}&code=red`,
      undefined,
      observationsOnly,
    );
    assert.equal(denied.status, 403, denied.text);
  });
});

describe('CodeSystem $validate-code and $lookup', () => {
  test('$validate-code: a concept of the system, compared as it says; a fragment says so when a code is missing', async () => {
    assert.deepEqual(answer((await call('GET', `CodeSystem/$validate-code?url=${COLORS}&code=warm`)).parameter), {
      result: true,
      display: 'Warm colours',
    });
    assert.deepEqual(answer((await call('GET', `CodeSystem/$validate-code?url=${COLORS}&code=RED`)).parameter), {
      result: false,
      message: `${COLORS}|RED is not in CodeSystem ${COLORS}`,
    });
    assert.deepEqual(answer((await call('GET', 'CodeSystem/shapes/$validate-code?code=square')).parameter), {
      result: false,
      message: `${SHAPES}|square is not in CodeSystem ${SHAPES} (which holds content "fragment")`,
    });
    const otherSystem = await call(
      'POST',
      'CodeSystem/colors/$validate-code',
      params({ name: 'coding', valueCoding: { system: SHAPES, code: 'red' } }),
    );
    assert.equal(answer(otherSystem.parameter).result, false);
  });

  test('$lookup: display, definition, designations, properties with parent and child; narrowed by property', async () => {
    const red = await call('GET', `CodeSystem/$lookup?system=${COLORS}&code=red`);
    assert.equal(red.status, 200, red.text);
    assert.deepEqual(answer(red.parameter), {
      name: 'Colors',
      version: '1',
      display: 'Red',
      designation: ['language=nl value=Rood'],
      property: ['code=parent value=warm'],
    });
    const warm = await call(
      'POST',
      'CodeSystem/$lookup',
      params({ name: 'coding', valueCoding: { system: COLORS, code: 'warm' } }),
    );
    assert.deepEqual(answer(warm.parameter).property, [
      'code=notSelectable value=true',
      'code=child value=red',
      'code=child value=orange',
    ]);
    const children = await call('GET', `CodeSystem/$lookup?system=${COLORS}&code=warm&property=child`);
    assert.deepEqual(answer(children.parameter).property, ['code=child value=red', 'code=child value=orange']);
    const blue = await call('GET', `CodeSystem/$lookup?system=${COLORS}&version=1&code=blue`);
    assert.deepEqual(answer(blue.parameter), {
      name: 'Colors',
      version: '1',
      display: 'Blue',
      definition: 'The colour of the sky',
      property: ['code=hex value=#00f'],
    });
    for (const [path, status, message] of [
      [`CodeSystem/$lookup?system=${COLORS}&code=green`, 404, /code \\"green\\" is not in CodeSystem/],
      [`CodeSystem/$lookup?system=${COLORS}&version=2&code=red`, 400, /no CodeSystem .*colors\|2 in this vault/],
      ['CodeSystem/$lookup?code=red', 400, /a code needs its system/],
      [`CodeSystem/$lookup?system=${COLORS}&code=red&displayLanguage=nl`, 400, /not displayLanguage/],
    ] as const) {
      const r = await call('GET', path);
      assert.equal(r.status, status, `${path}: ${r.text}`);
      assert.match(r.text, message, path);
    }
    const valueSetsOnly = await grantedClient(p, 'tx-vs-reader', 'system/ValueSet.rs', ['tx']);
    assert.equal(
      (await call('GET', `CodeSystem/$lookup?system=${COLORS}&code=red`, undefined, valueSetsOnly)).status,
      403,
    );
  });

  test('$subsumes: from nesting and from parent properties, at any depth; what it cannot answer is a 400', async () => {
    const outcome = async (path: string, body?: Obj) => {
      const r = await call(body ? 'POST' : 'GET', path, body);
      assert.equal(r.status, 200, `${path}: ${r.text}`);
      return answer(r.parameter).outcome;
    };
    const colors = (a: string, b: string) => outcome(`CodeSystem/$subsumes?system=${COLORS}&codeA=${a}&codeB=${b}`);
    assert.equal(await colors('warm', 'red'), 'subsumes');
    assert.equal(await colors('red', 'warm'), 'subsumed-by');
    assert.equal(await colors('red', 'blue'), 'not-subsumed');
    assert.equal(await colors('red', 'red'), 'equivalent');
    assert.equal(await outcome('CodeSystem/tastes/$subsumes?codeA=taste&codeB=honey'), 'subsumes');
    assert.equal(await outcome('CodeSystem/tastes/$subsumes?codeA=honey&codeB=bitter'), 'not-subsumed');
    const codings = params(
      { name: 'codingA', valueCoding: { system: TASTES, code: 'honey' } },
      { name: 'codingB', valueCoding: { system: TASTES, code: 'sweet' } },
    );
    assert.equal(await outcome(`CodeSystem/$subsumes?system=${TASTES}`, codings), 'subsumed-by');
    // A parent cycle is walked once.
    assert.equal(await outcome('CodeSystem/loop/$subsumes?codeA=a&codeB=b'), 'subsumes');
    assert.equal(await outcome('CodeSystem/loop/$subsumes?codeA=a&codeB=c'), 'not-subsumed');
    // $lookup tells the same hierarchy, each parent and child once.
    const sweet = await call('GET', `CodeSystem/$lookup?system=${TASTES}&code=sweet`);
    assert.deepEqual(answer(sweet.parameter).property, ['code=parent value=taste', 'code=child value=honey']);
    for (const [path, message] of [
      [`CodeSystem/$subsumes?system=${TASTES}&codeA=taste&codeB=salty`, /code "salty" is not in CodeSystem/],
      [`CodeSystem/$subsumes?system=${TASTES}&codeA=taste`, /takes one of codeB or codingB/],
      ['CodeSystem/grouped/$subsumes?codeA=group&codeB=member', /its hierarchy means grouped-by, not is-a/],
      [`CodeSystem/$subsumes?codeA=a&codeB=b`, /give the CodeSystem/],
      [`CodeSystem/tastes/$subsumes?system=${TASTES}&codeA=a&codeB=b`, /on an instance \$subsumes takes no system/],
    ] as const) {
      const r = await call('GET', path);
      assert.equal(r.status, 400, `${path}: ${r.text}`);
      assert.match(r.text.replaceAll('\\"', '"'), message, path);
    }
    const otherSystem = await call(
      'POST',
      'CodeSystem/tastes/$subsumes',
      params(
        { name: 'codingA', valueCoding: { system: COLORS, code: 'red' } },
        { name: 'codingB', valueCoding: { system: TASTES, code: 'sweet' } },
      ),
    );
    assert.equal(otherSystem.status, 400, otherSystem.text);
    assert.match(otherSystem.text, /codingA is of http:\/\/example.org\/cs\/colors, not of/);
  });

  test('search :below and :above: the code and what it subsumes, or what subsumes it, in a CodeSystem held here', async () => {
    const ids = async (query: string) => {
      const r = await fhir(p, writer, 'GET', `/tx/${query}`);
      assert.equal(r.status, 200, `${query}: ${r.text}`);
      return ((r.json as { entry?: { resource: { id: string } }[] }).entry ?? []).map((e) => e.resource.id).sort();
    };
    assert.deepEqual(await ids(`Observation?code:below=${COLORS}|warm`), ['o-red', 'o-warm']);
    assert.deepEqual(await ids(`Observation?code:above=${COLORS}|red`), ['o-red', 'o-warm']);
    assert.deepEqual(await ids(`Observation?code:below=${TASTES}|taste`), ['o-bitter', 'o-honey']);
    assert.deepEqual(await ids(`Observation?code:below=${TASTES}|sweet,${COLORS}|blue`), ['o-blue', 'o-honey']);
    // A uri's :below is the uri's own, as before.
    assert.deepEqual(await ids(`ValueSet?url:below=${VS}`), ['all-colors', 'all-loinc', 'all-shapes', 'red-only']);
    for (const [query, status, message] of [
      [`Observation?code:below=warm`, 400, /takes system\|code, not "warm"/],
      [`Observation?code:below=${SHAPES}|circle`, 400, /CodeSystem .*shapes here is not complete/],
      ['Observation?code:below=http://loinc.org|1234-5', 400, /no CodeSystem http:\/\/loinc.org, and a hierarchy/],
      [`Observation?code:below=${COLORS}|green`, 400, /is not in CodeSystem/],
      ['Observation?code:below=http://example.org/cs/grouped|group', 400, /means grouped-by, not is-a/],
      [`Patient?_has:Observation:subject:code:below=${COLORS}|warm`, 400, /answered at the top of a search only/],
    ] as const) {
      const r = await fhir(p, writer, 'GET', `/tx/${query}`);
      assert.equal(r.status, status, `${query}: ${r.text}`);
      assert.match(r.text.replaceAll('\\"', '"'), message, query);
    }
    const observationsOnly = await grantedClient(p, 'tx-obs-below', 'system/Observation.rs', ['tx']);
    const denied = await fhir(p, observationsOnly, 'GET', `/tx/Observation?code:below=${COLORS}|warm`);
    assert.equal(denied.status, 403, denied.text);
  });

  test(':below in a large hierarchy: a branch is found; more than 1,000 codes is 400 too-costly', async () => {
    // 2,000 concepts, each the child of the one at a tenth of its number (c0 the root).
    const WIDE = 'http://example.org/cs/wide';
    const concept = Array.from({ length: 2000 }, (_, i) => ({
      code: `c${i}`,
      ...(i ? { property: [{ code: 'parent', valueCode: `c${Math.floor(i / 10)}` }] } : {}),
    }));
    await put({ resourceType: 'CodeSystem', id: 'wide', url: WIDE, status: 'active', content: 'complete', concept });
    await put({
      resourceType: 'Observation',
      id: 'o-wide',
      status: 'final',
      code: { coding: [{ system: WIDE, code: 'c1234' }] },
    });
    const search = (query: string) => fhir(p, writer, 'GET', `/tx/Observation?${query}`);
    // c1234 is below c123 and c12 (110 codes below it); not below c2 or c124.
    for (const [code, found] of [
      ['c123', ['o-wide']],
      ['c12', ['o-wide']],
      ['c124', []],
      ['c2', []],
    ] as const) {
      const r = await search(`code:below=${WIDE}|${code}`);
      assert.equal(r.status, 200, r.text);
      const entries = (r.json as { entry?: { resource: { id: string } }[] }).entry ?? [];
      assert.deepEqual(
        entries.map((e) => e.resource.id),
        found,
        code,
      );
    }
    // Below c1: 10 + 100 + 1,000 codes.
    const root = await search(`code:below=${WIDE}|c1`);
    assert.equal(root.status, 400, root.text);
    assert.match(root.text, /too-costly/);
    assert.match(root.text, /take up to 1000 codes/);
    await fhir(p, writer, 'DELETE', '/tx/Observation/o-wide');
    // 150,000 concepts under one below the one searched: past the limit is still an answer, not a failure of
    // the walk itself.
    const FLAT = 'http://example.org/cs/flat';
    const children = Array.from({ length: 150_000 }, (_, i) => ({ code: `f${i}` }));
    await put({
      resourceType: 'CodeSystem',
      id: 'flat',
      url: FLAT,
      status: 'active',
      content: 'complete',
      concept: [{ code: 'top', concept: [{ code: 'middle', concept: children }] }],
    });
    const flat = await search(`code:below=${FLAT}|top`);
    assert.equal(flat.status, 400, flat.text);
    assert.match(flat.text, /take up to 1000 codes/);
    await fhir(p, writer, 'DELETE', '/tx/CodeSystem/flat');
  });

  test('the CapabilityStatement lists the operations', async () => {
    const r = await fhir(p, undefined, 'GET', '/tx/metadata');
    const resources = (r.json as { rest: { resource: { type: string; operation?: { name: string }[] }[] }[] }).rest[0]
      ?.resource;
    const ops = (type: string) => resources?.find((x) => x.type === type)?.operation?.map((o) => o.name);
    assert.deepEqual(ops('ValueSet'), ['expand', 'validate-code']);
    assert.deepEqual(ops('CodeSystem'), ['lookup', 'subsumes', 'validate-code']);
    assert.deepEqual(ops('ConceptMap'), ['translate']);
  });
});

describe('ConceptMap $translate', () => {
  const LOCAL = 'http://example.org/cs/local-lab';
  const LOINC = 'http://loinc.org';
  const SNOMED = 'http://snomed.info/sct';
  const MAP = 'http://example.org/cm/local-to-loinc';
  before(async () => {
    await put({
      resourceType: 'ConceptMap',
      id: 'local-to-loinc',
      url: MAP,
      version: '2',
      status: 'active',
      sourceUri: 'http://example.org/vs/local-lab',
      targetUri: 'http://example.org/vs/loinc-lab',
      group: [
        {
          source: LOCAL,
          target: LOINC,
          element: [
            {
              code: 'HB',
              display: 'Hemoglobin',
              target: [{ code: '718-7', display: 'Hemoglobin [Mass/volume] in Blood', equivalence: 'equivalent' }],
            },
            {
              code: 'GLU',
              target: [
                { code: '2345-7', equivalence: 'wider' },
                { code: '2339-0', equivalence: 'narrower', comment: 'in blood only' },
              ],
            },
            { code: 'XX', target: [{ equivalence: 'unmatched' }] },
          ],
          unmapped: { mode: 'fixed', code: 'LA4489-6', display: 'Unknown' },
        },
        {
          source: LOCAL,
          target: SNOMED,
          element: [{ code: 'HB', target: [{ code: '38082009', equivalence: 'equivalent' }] }],
        },
      ],
    });
    await put(
      {
        resourceType: 'ConceptMap',
        id: 'other-vault-map',
        url: 'http://example.org/cm/elsewhere',
        status: 'active',
        group: [
          { source: LOCAL, target: LOINC, element: [{ code: 'HB', target: [{ code: 'nope', equivalence: 'equal' }] }] },
        ],
      },
      'other-tx',
    );
  });
  const matches = (parameter: Param[]) =>
    parameter
      .filter((x) => x.name === 'match')
      .map((m) =>
        (m.part ?? [])
          .map((x) => {
            const c = (x as { valueCoding?: { system: string; code: string; display?: string } }).valueCoding;
            return c
              ? `${c.system}|${c.code}${c.display ? ` "${c.display}"` : ''}`
              : (x.valueCode ?? (x as { valueUri?: string }).valueUri);
          })
          .join(' '),
      );

  test("a code of the source system: every target of every group of the vault's maps, with its equivalence", async () => {
    const hb = await call('GET', `ConceptMap/$translate?system=${encodeURIComponent(LOCAL)}&code=HB`);
    assert.equal(hb.status, 200, hb.text);
    assert.equal(answer(hb.parameter).result, true);
    assert.deepEqual(matches(hb.parameter), [
      `equivalent ${LOINC}|718-7 "Hemoglobin [Mass/volume] in Blood" ${MAP}`,
      `equivalent ${SNOMED}|38082009 ${MAP}`,
    ]);
    const loincOnly = await call(
      'POST',
      'ConceptMap/local-to-loinc/$translate',
      params(
        { name: 'coding', valueCoding: { system: LOCAL, code: 'GLU' } },
        { name: 'targetsystem', valueUri: LOINC },
      ),
    );
    assert.deepEqual(matches(loincOnly.parameter), [`wider ${LOINC}|2345-7 ${MAP}`, `narrower ${LOINC}|2339-0 ${MAP}`]);
    // A code the group has no element for takes its unmapped code; one mapped to nothing is not a match.
    const other = await call(
      'GET',
      `ConceptMap/$translate?url=${encodeURIComponent(MAP)}&system=${encodeURIComponent(LOCAL)}&code=NA&targetsystem=${encodeURIComponent(LOINC)}`,
    );
    assert.deepEqual(matches(other.parameter), [`inexact ${LOINC}|LA4489-6 "Unknown" ${MAP}`]);
    const none = await call('GET', `ConceptMap/$translate?system=${encodeURIComponent(LOCAL)}&code=XX`);
    assert.equal(answer(none.parameter).result, false);
    assert.deepEqual(matches(none.parameter), [`unmatched ${MAP}`]);
    assert.match(String(answer(none.parameter).message), /no mapping of .*\|XX in 1 ConceptMap/);
  });

  test('reverse reads the maps from target to source; source and target narrow which maps', async () => {
    const back = await call(
      'GET',
      `ConceptMap/$translate?system=${encodeURIComponent(LOINC)}&code=2345-7&reverse=true`,
    );
    assert.deepEqual(matches(back.parameter), [`narrower ${LOCAL}|GLU ${MAP}`]);
    const narrowed = await call(
      'GET',
      `ConceptMap/$translate?system=${encodeURIComponent(LOCAL)}&code=HB&source=${encodeURIComponent('http://example.org/vs/other')}`,
    );
    assert.equal(answer(narrowed.parameter).result, false);
    assert.deepEqual(matches(narrowed.parameter), []);
  });

  test("refused with a reason: no system, unknown parameter, dependency, another vault's map, no ConceptMap read", async () => {
    const refused = async (path: string, status: number, says: RegExp, caller = writer) => {
      const r = await fhir(p, caller, 'GET', `/tx/${path}`);
      assert.equal(r.status, status, r.text);
      assert.match(r.text, says);
    };
    await refused('ConceptMap/$translate?code=HB', 400, /a code needs its system/);
    await refused(`ConceptMap/$translate?system=${LOCAL}&code=HB&nope=1`, 400, /not nope/);
    await refused(`ConceptMap/$translate?system=${LOCAL}&code=HB&dependency=x`, 400, /dependency is not supported/);
    await refused(`ConceptMap/$translate?system=${LOCAL}&code=HB&reverse=yes`, 400, /reverse must be true or false/);
    await refused(
      `ConceptMap/$translate?url=${encodeURIComponent('http://example.org/cm/elsewhere')}&system=${LOCAL}&code=HB`,
      400,
      /no ConceptMap .* in this vault/,
    );
    await refused(
      `ConceptMap/other-vault-map/$translate?system=${LOCAL}&code=HB`,
      400,
      /no ConceptMap ConceptMap\/other-vault-map in this vault/,
    );
    const observationsOnly = await grantedClient(p, 'tx-obs-translate', 'system/Observation.rs', ['tx']);
    await refused(`ConceptMap/$translate?system=${LOCAL}&code=HB`, 403, /ConceptMap/, observationsOnly);
  });
});
