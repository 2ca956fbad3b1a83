import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { account, type Caller, fhir, grant, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// FHIRPath Patch (R4 fhirpatch.html): PATCH with a Parameters body, by id, by condition and in Bundles.
let p: TestPlatform;
let writer: Caller;

type Part = Record<string, unknown>;
const op = (type: string, path: string, more: Part[] = []) => ({
  name: 'operation',
  part: [{ name: 'type', valueCode: type }, { name: 'path', valueString: path }, ...more],
});
const patchBody = (...operation: unknown[]) => ({ resourceType: 'Parameters', parameter: operation });

const PATIENT = {
  resourceType: 'Patient',
  id: 'fp',
  identifier: [{ system: 'urn:fp', value: 'fp-1' }],
  name: [{ family: 'Alpha', given: ['Ann', 'Beth'] }, { family: 'Beta' }],
  birthDate: '1970-01-01',
  deceasedBoolean: false,
  telecom: [{ system: 'phone', value: '1' }],
};

/** Puts the test patient back as it was; its version number (a PUT is a new version). */
async function reset(resource: Record<string, unknown> = PATIENT): Promise<number> {
  const r = await fhir(p, writer, 'PUT', `/fp/Patient/${resource.id}`, resource);
  assert.ok(r.status === 200 || r.status === 201, r.text);
  return Number((r.json.meta as { versionId: string }).versionId);
}
const patchIt = (body: unknown, path = '/fp/Patient/fp', headers: Record<string, string> = {}) =>
  fhir(p, writer, 'PATCH', path, body, headers);
const read = async (id = 'fp') => (await fhir(p, writer, 'GET', `/fp/Patient/${id}`)).json;

before(async () => {
  p = await startPlatform();
  await account(p, 'urn:cara:account:fp');
  writer = await secretClient(p, 'fp-writer', 'system/*.cruds');
  await grant(p, { partition: 'fp', client: 'fp-writer', scope: 'system/*.cruds' });
});
after(() => p.stop());

describe('FHIRPath Patch operations', () => {
  test('replace a primitive, and a choice element whose type changes', async () => {
    const version = await reset();
    const r = await patchIt(
      patchBody(
        op('replace', 'Patient.birthDate', [{ name: 'value', valueDate: '1971-02-03' }]),
        op('replace', 'Patient.deceased', [{ name: 'value', valueDateTime: '2020-05-06' }]),
        op('replace', "Patient.name.where(family = 'Alpha').given[1]", [{ name: 'value', valueString: 'Bea' }]),
      ),
    );
    assert.equal(r.status, 200, r.text);
    const pt = await read();
    assert.equal(pt.birthDate, '1971-02-03');
    assert.equal(pt.deceasedBoolean, undefined);
    assert.equal(pt.deceasedDateTime, '2020-05-06');
    assert.deepEqual((pt.name as { given?: string[] }[])[0]?.given, ['Ann', 'Bea']);
    assert.equal((pt.meta as { versionId: string }).versionId, String(version + 1));
  });

  test('add: a list grows, a single element is set once, a backbone comes as parts', async () => {
    await reset();
    const r = await patchIt(
      patchBody(
        op('add', 'Patient', [
          { name: 'name', valueString: 'telecom' },
          { name: 'value', valueContactPoint: { system: 'email', value: 'a@b.c' } },
        ]),
        op('add', 'Patient', [
          { name: 'name', valueString: 'gender' },
          { name: 'value', valueCode: 'female' },
        ]),
        op('add', 'Patient', [
          { name: 'name', valueString: 'contact' },
          {
            name: 'value',
            part: [
              { name: 'name', valueHumanName: { family: 'Contact' } },
              { name: 'relationship', valueCodeableConcept: { text: 'friend' } },
            ],
          },
        ]),
        op('add', "Patient.name.where(family = 'Beta')", [
          { name: 'name', valueString: 'given' },
          { name: 'value', valueString: 'Cid' },
        ]),
      ),
    );
    assert.equal(r.status, 200, r.text);
    const pt = await read();
    assert.deepEqual(pt.telecom, [
      { system: 'phone', value: '1' },
      { system: 'email', value: 'a@b.c' },
    ]);
    assert.equal(pt.gender, 'female');
    assert.deepEqual(pt.contact, [{ name: { family: 'Contact' }, relationship: [{ text: 'friend' }] }]);
    assert.deepEqual((pt.name as { given?: string[] }[])[1]?.given, ['Cid']);
    const again = await patchIt(
      patchBody(
        op('add', 'Patient', [
          { name: 'name', valueString: 'gender' },
          { name: 'value', valueCode: 'male' },
        ]),
      ),
    );
    assert.equal(again.status, 400);
    assert.match(again.text, /gender has a value already/);
  });

  test("add to a primitive: its extension and id go beside it (_birthDate, a list's _given)", async () => {
    await reset();
    const TIME = 'http://hl7.org/fhir/StructureDefinition/patient-birthTime';
    const r = await patchIt(
      patchBody(
        op('add', 'Patient.birthDate', [
          { name: 'name', valueString: 'extension' },
          {
            name: 'value',
            part: [
              { name: 'url', valueUri: TIME },
              { name: 'value', valueDateTime: '1970-01-01T06:30:00Z' },
            ],
          },
        ]),
        op('add', 'Patient.birthDate', [
          { name: 'name', valueString: 'id' },
          { name: 'value', valueString: 'bd' },
        ]),
        op('add', "Patient.name.where(family = 'Alpha').given[1]", [
          { name: 'name', valueString: 'extension' },
          { name: 'value', valueExtension: { url: 'urn:fp:nickname', valueBoolean: true } },
        ]),
        // What was added is a path's target like any element.
        op('replace', `Patient.birthDate.extension.where(url = '${TIME}').value`, [
          { name: 'value', valueDateTime: '1970-01-01T07:45:00Z' },
        ]),
      ),
    );
    assert.equal(r.status, 200, r.text);
    const pt = await read();
    assert.equal(pt.birthDate, '1970-01-01');
    assert.deepEqual(pt._birthDate, { id: 'bd', extension: [{ url: TIME, valueDateTime: '1970-01-01T07:45:00Z' }] });
    const alpha = (pt.name as { given: string[]; _given?: unknown[] }[])[0];
    assert.deepEqual(alpha?.given, ['Ann', 'Beth']);
    assert.deepEqual(alpha?._given, [null, { extension: [{ url: 'urn:fp:nickname', valueBoolean: true }] }]);

    for (const [name, refusal] of [
      ['family', /a primitive has only id and extension, not family/],
      ['id', /id has a value already/],
    ] as const) {
      const r = await patchIt(
        patchBody(
          op('add', 'Patient.birthDate', [
            { name: 'name', valueString: name },
            { name: 'value', valueString: 'x' },
          ]),
        ),
      );
      assert.equal(r.status, 400, r.text);
      assert.match(r.text, refusal);
    }
    const gone = await patchIt(patchBody(op('delete', 'Patient.birthDate')));
    assert.equal(gone.status, 200, gone.text);
    const deleted = await read();
    assert.equal(deleted.birthDate, undefined);
    assert.equal(deleted._birthDate, undefined, 'its extensions go with it');
  });

  test('insert, move and delete in a list; delete of nothing is nothing', async () => {
    await reset();
    const r = await patchIt(
      patchBody(
        op('insert', 'Patient.name', [
          { name: 'value', valueHumanName: { family: 'Zero' } },
          { name: 'index', valueInteger: 0 },
        ]),
        op('move', 'Patient.name', [
          { name: 'source', valueInteger: 2 },
          { name: 'destination', valueInteger: 0 },
        ]),
        op('delete', "Patient.name.where(family = 'Alpha')"),
        op('delete', "Patient.name.where(family = 'Nobody')"),
        op('delete', 'Patient.telecom'),
      ),
    );
    assert.equal(r.status, 200, r.text);
    const pt = await read();
    assert.deepEqual(
      (pt.name as { family: string }[]).map((n) => n.family),
      ['Beta', 'Zero'],
    );
    assert.equal(pt.telecom, undefined, 'the last element of a list deleted: no empty array');
  });

  test('a patch that cannot apply changes nothing: 400 naming the operation, 422 for an invalid result', async () => {
    const version = await reset();
    const cases: [unknown, number, RegExp][] = [
      [patchBody(op('replace', 'Patient.name', [{ name: 'value', valueHumanName: {} }])), 400, /one element, not 2/],
      [patchBody(op('replace', 'Patient.gender', [{ name: 'value', valueCode: 'male' }])), 400, /one element, not 0/],
      [patchBody(op('delete', 'Patient.name')), 400, /selects 2 elements/],
      [
        patchBody(
          op('insert', 'Patient.name', [
            { name: 'value', valueHumanName: {} },
            { name: 'index', valueInteger: 5 },
          ]),
        ),
        400,
        /past the end/,
      ],
      [
        patchBody(
          op('move', 'Patient.name', [
            { name: 'source', valueInteger: 0 },
            { name: 'destination', valueInteger: 9 },
          ]),
        ),
        400,
        /inside the list/,
      ],
      [
        patchBody(
          op('add', 'Patient', [
            { name: 'name', valueString: 'nonsense' },
            { name: 'value', valueString: 'x' },
          ]),
        ),
        400,
        /Patient has no element nonsense/,
      ],
      [patchBody(op('replace', 'Patient.name.count()', [{ name: 'value', valueInteger: 1 }])), 400, /selects a value/],
      [
        patchBody(op('replace', 'Patient.name.(', [{ name: 'value', valueString: 'x' }])),
        400,
        /not a FHIRPath expression/,
      ],
      [patchBody(op('explode', 'Patient.name')), 400, /type is one of/],
      [patchBody(op('replace', 'Patient.birthDate')), 400, /value is required/],
      [patchBody({ name: 'not-an-operation' }), 400, /operation with parts/],
      [
        patchBody(op('replace', 'Patient.birthDate', [{ name: 'value', valueDate: 'yesterday' }])),
        422,
        /birthDate|date/i,
      ],
      [patchBody(op('replace', 'Patient.id', [{ name: 'value', valueId: 'other' }])), 422, /id/],
      [
        patchBody(op('replace', 'Patient.gender', [{ name: 'value', valueCode: 'x' }]), op('delete', 'Patient.gender')),
        400,
        /one element, not 0/,
      ],
    ];
    for (const [body, status, message] of cases) {
      const r = await patchIt(body);
      assert.equal(r.status, status, `${JSON.stringify(body)} → ${r.text}`);
      assert.match(
        String((r.json as { issue: { diagnostics: string }[] }).issue[0]?.diagnostics),
        message,
        JSON.stringify(body),
      );
    }
    const pt = await read();
    assert.equal((pt.meta as { versionId: string }).versionId, String(version), 'nothing was written');
    assert.equal(pt.birthDate, '1970-01-01');
  });

  test('If-Match, conditional patch and XML bodies work as with JSON Patch', async () => {
    const version = await reset();
    const body = patchBody(op('replace', 'Patient.birthDate', [{ name: 'value', valueDate: '1980-01-01' }]));
    assert.equal((await patchIt(body, '/fp/Patient/fp', { 'if-match': 'W/"9"' })).status, 412);
    const ok = await patchIt(body, '/fp/Patient?identifier=urn:fp|fp-1', { 'if-match': `W/"${version}"` });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.birthDate, '1980-01-01');
    const xml =
      '<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="operation"/>' +
      '<part><name value="type"/><valueCode value="replace"/></part>' +
      '<part><name value="path"/><valueString value="Patient.birthDate"/></part>' +
      '<part><name value="value"/><valueDate value="1990-09-09"/></part></parameter></Parameters>';
    const r = await patchIt(xml, '/fp/Patient/fp', { 'content-type': 'application/fhir+xml' });
    assert.equal(r.status, 200, r.text);
    assert.equal((await read()).birthDate, '1990-09-09');
  });
});

describe('FHIRPath Patch in a transaction', () => {
  test('a Parameters entry patches with the PUTs; urn:uuid references in its values are resolved', async () => {
    const version = await reset();
    const r = await fhir(p, writer, 'POST', '/fp', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          resource: patchBody(
            op('add', 'Patient', [
              { name: 'name', valueString: 'generalPractitioner' },
              { name: 'value', valueReference: { reference: 'urn:uuid:6f1c2a34-0b5e-4c1e-9a51-7f0d9e1b2c3d' } },
            ]),
            op('replace', 'Patient.birthDate', [{ name: 'value', valueDate: '1960-06-06' }]),
          ),
          request: { method: 'PATCH', url: 'Patient/fp', ifMatch: `W/"${version}"` },
        },
        {
          fullUrl: 'urn:uuid:6f1c2a34-0b5e-4c1e-9a51-7f0d9e1b2c3d',
          resource: { resourceType: 'Practitioner', name: [{ family: 'Doc' }] },
          request: { method: 'POST', url: 'Practitioner' },
        },
      ],
    });
    assert.equal(r.status, 200, r.text);
    const entries = (r.json as { entry: { response: { status: string; location?: string } }[] }).entry;
    assert.deepEqual(
      entries.map((e) => e.response.status),
      ['200 OK', '201 Created'],
    );
    const practitioner = String(entries[1]?.response.location).replace(/\/_history\/1$/, '');
    const pt = await read();
    assert.deepEqual(pt.generalPractitioner, [{ reference: practitioner }]);
    assert.equal(pt.birthDate, '1960-06-06');
  });
});
