import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { type Caller, fhir, grantedClient, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// $validate (operation-resource-validate.html): would this content be accepted, generally or as a create, an
// update or a delete? 200 with every problem whether or not it would; 4xx when it cannot be validated at all.
let p: TestPlatform;
let writer: Caller;
let reader: Caller;
let updater: Caller;
let auditor: Caller;

type Issue = { severity: string; code: string; diagnostics: string; expression?: string[] };
type Obj = Record<string, unknown>;
const issuesOf = (r: { json: Obj }) => (r.json.issue ?? []) as Issue[];
const validObservation = { resourceType: 'Observation', status: 'final', code: { text: 'pulse' } };
const invalidObservation = { resourceType: 'Observation', status: 'finalized', code: { text: 'pulse' }, bogus: 1 };

async function count(type: string): Promise<number> {
  const r = await fhir(p, writer, 'GET', `/vv/${type}?_summary=count`);
  return (r.json as { total: number }).total;
}

type ElementEdit = (e: { path: string } & Obj) => Obj;

/** A profile of `type`: R4's snapshot with `edit` applied to each element. */
function constrained(type: string, id: string, edit: ElementEdit) {
  const r4 = JSON.parse(
    readFileSync(new URL('../src/fhir/validation/structure-definitions.json', import.meta.url), 'utf8'),
  ) as {
    entry: { resource: { name: string; snapshot: { element: ({ path: string; constraint?: object[] } & Obj)[] } } }[];
  };
  const base = r4.entry.find((e) => e.resource.name === type)?.resource;
  assert.ok(base);
  const url = `http://example.org/fhir/StructureDefinition/${id}`;
  const profile = {
    ...base,
    resourceType: 'StructureDefinition',
    id,
    url,
    version: '1',
    name: id.replace(/(^|-)(\w)/g, (_, _d, c: string) => c.toUpperCase()),
    status: 'active',
    derivation: 'constraint',
    baseDefinition: `http://hl7.org/fhir/StructureDefinition/${type}`,
    snapshot: {
      // The validator's copy leaves out what a StructureDefinition resource must say of each element.
      element: base.snapshot.element.map((e) => ({
        ...e,
        definition: e.path,
        constraint: e.constraint?.map((c) => ({ ...c, human: (c as Obj).key })),
        ...edit(e),
      })),
    },
  };
  return { url, profile };
}

/** A profile of Patient that requires birthDate and gender: R4's snapshot with both made 1..1. */
function strictPatient() {
  return constrained('Patient', 'strict-patient', (e) =>
    e.path === 'Patient.birthDate' || e.path === 'Patient.gender' ? { min: 1 } : {},
  );
}

/** The same profile with a differential only, at its own url. */
function differentialOf(profile: Obj & { url: string }) {
  const { snapshot: _, ...withoutSnapshot } = profile;
  return {
    ...withoutSnapshot,
    id: 'no-snapshot',
    url: `${profile.url}-differential`,
    differential: { element: [{ id: 'Patient.birthDate', path: 'Patient.birthDate', min: 1 }] },
  };
}

before(async () => {
  p = await startPlatform();
  await partition(p, 'vv');
  await partition(p, 'other');
  writer = await grantedClient(p, 'vv-writer', 'system/*.cruds', ['vv']);
  reader = await grantedClient(p, 'vv-reader', 'system/*.rs', ['vv']);
  updater = await grantedClient(p, 'vv-updater', 'system/Observation.u', ['vv']);
  auditor = await secretClient(p, 'vv-auditor', 'system/AuditEvent.rs');
});
after(() => p.stop());

describe('$validate', () => {
  test('a conforming resource: one information issue, and nothing is stored', async () => {
    const before = await count('Observation');
    const r = await fhir(p, writer, 'POST', '/vv/Observation/$validate', validObservation);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.resourceType, 'OperationOutcome');
    assert.deepEqual(
      issuesOf(r).map((i) => [i.severity, i.code]),
      [['information', 'informational']],
    );
    assert.match(
      issuesOf(r)[0]?.diagnostics ?? '',
      /conforms to http:\/\/hl7.org\/fhir\/StructureDefinition\/Observation/,
    );
    assert.equal(await count('Observation'), before);
  });

  test('a non-conforming one: 200 with every problem and its path, structural and coded alike', async () => {
    const before = await count('Observation');
    const r = await fhir(p, writer, 'POST', '/vv/Observation/$validate', invalidObservation);
    assert.equal(r.status, 200, r.text);
    const issues = issuesOf(r);
    assert.ok(
      issues.every((i) => i.severity === 'error'),
      r.text,
    );
    assert.deepEqual(issues.map((i) => i.expression?.[0]).sort(), ['Observation.bogus', 'Observation.status']);
    assert.match(issues.find((i) => i.code === 'code-invalid')?.diagnostics ?? '', /"finalized" is not a valid code/);
    // The same content as a create is refused with the first of them, and nothing is stored either way.
    assert.equal((await fhir(p, writer, 'POST', '/vv/Observation', invalidObservation)).status, 422);
    assert.equal(await count('Observation'), before);
  });

  test('the Parameters form: resource, mode and the base profile', async () => {
    const params = (...parameter: Record<string, unknown>[]) => ({ resourceType: 'Parameters', parameter });
    const ok = await fhir(
      p,
      writer,
      'POST',
      '/vv/Observation/$validate',
      params(
        { name: 'resource', resource: validObservation },
        { name: 'mode', valueCode: 'create' },
        { name: 'profile', valueUri: 'http://hl7.org/fhir/StructureDefinition/Observation' },
      ),
    );
    assert.equal(ok.status, 200, ok.text);
    assert.match(issuesOf(ok)[0]?.diagnostics ?? '', /the create of Observation would be accepted/);
    const bad = await fhir(
      p,
      writer,
      'POST',
      '/vv/Observation/$validate',
      params({ name: 'resource', resource: invalidObservation }),
    );
    assert.equal(issuesOf(bad).length, 2, bad.text);
    // What cannot be validated here is a 4xx, not an answer about the resource.
    for (const [body, status, message] of [
      [
        params(
          { name: 'resource', resource: validObservation },
          { name: 'profile', valueUri: 'http://example.org/StructureDefinition/my-obs' },
        ),
        400,
        /no StructureDefinition http:\/\/example.org\/StructureDefinition\/my-obs in this vault/,
      ],
      [params({ name: 'mode', valueCode: 'create' }), 400, /give the resource to validate/],
      [
        params({ name: 'resource', resource: validObservation }, { name: 'mode', valueCode: 'merge' }),
        400,
        /not one of create, update, delete/,
      ],
      [
        params({ name: 'resource', resource: validObservation }, { name: 'strictness', valueCode: 'high' }),
        400,
        /takes resource, mode and profile/,
      ],
      [{ resourceType: 'Patient' }, 400, /must have resourceType Observation/],
      ['[1,2]', 400, /must have resourceType Observation/],
    ] as const) {
      const r = await fhir(p, writer, 'POST', '/vv/Observation/$validate', body);
      assert.equal(r.status, status, `${JSON.stringify(body)} → ${r.text}`);
      assert.match(r.text, message);
    }
  });

  test('a profile stored in the vault: its constraints are checked beside the R4 ones', async () => {
    const { url, profile } = strictPatient();
    const stored = await fhir(p, writer, 'PUT', '/vv/StructureDefinition/strict-patient', profile);
    assert.equal(stored.status, 201, stored.text);
    const differential = differentialOf(profile);
    const storedDifferential = await fhir(p, writer, 'PUT', '/vv/StructureDefinition/no-snapshot', differential);
    assert.equal(storedDifferential.status, 201, storedDifferential.text);

    const lacking = { resourceType: 'Patient', birthDate: 'soon' };
    for (const named of [url, `${url}|1`, 'StructureDefinition/strict-patient']) {
      const r = await fhir(p, writer, 'POST', `/vv/Patient/$validate?profile=${encodeURIComponent(named)}`, lacking);
      assert.equal(r.status, 200, r.text);
      // The date's problem once (R4 and the profile both see it), and the profile's missing gender.
      assert.deepEqual(
        issuesOf(r)
          .map((i) => [i.severity, i.expression?.[0], i.diagnostics])
          .sort(),
        [
          ['error', 'Patient.birthDate', 'Invalid date format'],
          ['error', 'Patient.gender', 'Missing required property'],
        ],
        named,
      );
    }
    const params = (...parameter: Obj[]) => ({ resourceType: 'Parameters', parameter });
    const conforming = params(
      { name: 'resource', resource: { resourceType: 'Patient', birthDate: '1990-03-15', gender: 'female' } },
      { name: 'profile', valueCanonical: url },
    );
    const ok = await fhir(p, writer, 'POST', '/vv/Patient/$validate', conforming);
    assert.deepEqual(
      issuesOf(ok).map((i) => [i.severity, i.diagnostics]),
      [['information', `no issues: the resource conforms to ${url}`]],
    );
    // Without the profile the same lacking Patient only has its date wrong.
    const plain = await fhir(p, writer, 'POST', '/vv/Patient/$validate', lacking);
    assert.deepEqual(
      issuesOf(plain).map((i) => i.expression?.[0]),
      ['Patient.birthDate'],
    );

    for (const [path, status, message] of [
      [`/vv/Observation/$validate?profile=${url}`, 400, /constrains Patient, not Observation/],
      [`/vv/Patient/$validate?profile=${url}-differential`, 400, /has no snapshot/],
      [`/other/Patient/$validate?profile=${url}`, 404, /./],
    ] as const) {
      const body = path.includes('Observation') ? validObservation : lacking;
      const r = await fhir(p, writer, 'POST', path, body);
      assert.equal(r.status, status, `${path}: ${r.text}`);
      assert.match(r.text, message);
    }
    // The profile is read as the caller: one that may not read StructureDefinitions cannot name one.
    const patientsOnly = await grantedClient(p, 'vv-patients', 'system/Patient.c', ['vv']);
    const denied = await fhir(p, patientsOnly, 'POST', `/vv/Patient/$validate?profile=${url}`, lacking);
    assert.equal(denied.status, 403, denied.text);
    assert.match(denied.text, /StructureDefinition/);
  });

  test('the profiles a resource declares in meta.profile: checked when stored here, else a warning', async () => {
    // The previous test stored strict-patient (version 1) and its differential-only copy in vv.
    const { url, profile } = strictPatient();
    const unknown = 'http://unknown.example/StructureDefinition/nowhere';
    const base = 'http://hl7.org/fhir/StructureDefinition/Patient';
    const withMeta = (resource: Obj, ...declared: string[]) => ({ ...resource, meta: { profile: declared } });
    const lacking = { resourceType: 'Patient', birthDate: 'soon' };
    const conforming = { resourceType: 'Patient', birthDate: '1990-03-15', gender: 'female' };
    const validate = async (caller: Caller, path: string, body: Obj) => {
      const r = await fhir(p, caller, 'POST', path, body);
      assert.equal(r.status, 200, r.text);
      return issuesOf(r).map((i) => [i.severity, i.code, i.expression?.[0], i.diagnostics]);
    };

    // A declared profile is checked as a named one is, and a named one also declared is checked once.
    const profileErrors = [
      ['error', 'invalid', 'Patient.birthDate', 'Invalid date format'],
      ['error', 'invalid', 'Patient.gender', 'Missing required property'],
    ];
    assert.deepEqual((await validate(writer, '/vv/Patient/$validate', withMeta(lacking, url))).sort(), profileErrors);
    assert.deepEqual(
      (await validate(writer, `/vv/Patient/$validate?profile=${url}`, withMeta(lacking, url, url))).sort(),
      profileErrors,
    );
    // What cannot be checked here is a warning that says why; the base definition is always checked.
    assert.deepEqual(
      await validate(writer, '/vv/Patient/$validate', withMeta(conforming, base, unknown, `${url}-differential`, url)),
      [
        [
          'warning',
          'not-found',
          'Patient.meta.profile[1]',
          `meta.profile ${unknown} was not checked: no StructureDefinition ${unknown} in this vault`,
        ],
        [
          'warning',
          'not-supported',
          'Patient.meta.profile[2]',
          `meta.profile ${url}-differential was not checked: profile ${url}-differential has no snapshot: carevault validates against a profile's snapshot and does not generate one`,
        ],
        ['information', 'informational', undefined, `no errors: the resource conforms to ${base}, ${url}`],
      ],
    );
    assert.deepEqual(await validate(writer, '/vv/Patient/$validate?mode=create', withMeta(conforming, unknown)), [
      [
        'warning',
        'not-found',
        'Patient.meta.profile[0]',
        `meta.profile ${unknown} was not checked: no StructureDefinition ${unknown} in this vault`,
      ],
      ['information', 'informational', undefined, 'no errors: the create of Patient would be accepted'],
    ]);
    // A profile of another type cannot be conformed to: an error, and no verdict of conformance.
    assert.deepEqual(await validate(writer, '/vv/Observation/$validate', withMeta(validObservation, url)), [
      [
        'error',
        'invalid',
        'Observation.meta.profile[0]',
        `meta.profile: profile ${url} constrains Patient, not Observation`,
      ],
    ]);
    // Another vault's profiles are not found, and one that may not read StructureDefinitions is told so.
    const elsewhere = await grantedClient(p, 'other-writer', 'system/*.cruds', ['other']);
    const [notHere] = await validate(elsewhere, '/other/Patient/$validate', withMeta(conforming, url));
    assert.deepEqual(notHere?.slice(0, 3), ['warning', 'not-found', 'Patient.meta.profile[0]']);
    const patientsOnly = await grantedClient(p, 'vv-patients-only', 'system/Patient.c', ['vv']);
    const [denied] = await validate(patientsOnly, '/vv/Patient/$validate', withMeta(conforming, url));
    assert.deepEqual(denied?.slice(0, 3), ['warning', 'forbidden', 'Patient.meta.profile[0]']);
    assert.match(String(denied?.[3]), /was not checked: checking a resource against its meta\.profile reads Structure/);

    // Two versions of the url: the bare url is ambiguous, url|version is checked.
    const second = { ...profile, id: 'strict-patient-2', version: '2' };
    assert.equal((await fhir(p, writer, 'PUT', '/vv/StructureDefinition/strict-patient-2', second)).status, 201);
    const [ambiguous] = await validate(writer, '/vv/Patient/$validate', withMeta(conforming, url));
    assert.deepEqual(ambiguous?.slice(0, 3), ['warning', 'invalid', 'Patient.meta.profile[0]']);
    assert.match(String(ambiguous?.[3]), /several StructureDefinition resources are .*: name one as url\|version/);
    assert.deepEqual(
      (await validate(writer, '/vv/Patient/$validate', withMeta(lacking, `${url}|2`))).sort(),
      profileErrors,
    );

    // A resource claiming many profiles gets ten lookups, and a warning for each one past them.
    const many = Array.from({ length: 12 }, (_, i) => `${unknown}-${i}`);
    const issues = await validate(writer, '/vv/Patient/$validate', withMeta(conforming, ...many));
    assert.deepEqual(
      issues.map((i) => [i[0], i[1]]),
      [
        ...Array.from({ length: 10 }, () => ['warning', 'not-found']),
        ['warning', 'too-costly'],
        ['warning', 'too-costly'],
        ['information', 'informational'],
      ],
    );
  });

  test("a profile's bindings: checked against the vault's ValueSets where they differ from R4's", async () => {
    const LOINC = 'http://loinc.org';
    const VS = 'http://example.org/fhir/ValueSet';
    const vitals = {
      resourceType: 'ValueSet',
      id: 'bound-vitals',
      url: `${VS}/bound-vitals`,
      status: 'active',
      compose: { include: [{ system: LOINC, concept: [{ code: '8867-4' }, { code: '8480-6' }] }] },
    };
    assert.equal((await fhir(p, writer, 'PUT', '/vv/ValueSet/bound-vitals', vitals)).status, 201);
    const bind = (strength: string, valueSet: string) => ({ binding: { strength, valueSet } });
    const { url, profile } = constrained('Observation', 'bound-observation', (e) => {
      if (e.path === 'Observation.code' || e.path === 'Observation.component.code') {
        return bind('required', `${VS}/bound-vitals`);
      }
      if (e.path === 'Observation.method') return bind('extensible', `${VS}/bound-vitals`);
      if (e.path === 'Observation.bodySite') return bind('required', `${VS}/not-here`);
      return {};
    });
    assert.equal((await fhir(p, writer, 'PUT', '/vv/StructureDefinition/bound-observation', profile)).status, 201);
    const loinc = (code: string) => ({ coding: [{ system: LOINC, code }] });
    const observation = (more: Obj) => ({
      resourceType: 'Observation',
      status: 'final',
      code: loinc('8867-4'),
      ...more,
    });
    const validate = async (body: Obj, caller = writer) => {
      const r = await fhir(p, caller, 'POST', `/vv/Observation/$validate?profile=${url}`, body);
      assert.equal(r.status, 200, r.text);
      return issuesOf(r).map((i) => [i.severity, i.code, i.expression?.[0], i.diagnostics]);
    };
    const why = (strength: string, path: string) => `${strength} binding of ${path} in profile ${url}`;

    assert.deepEqual(await validate(observation({})), [
      ['information', 'informational', undefined, `no issues: the resource conforms to ${url}`],
    ]);
    // The required code outside the ValueSet (any coding of a CodeableConcept may be in it), in a component too.
    assert.deepEqual(
      await validate(
        observation({
          code: {
            coding: [
              { system: 'urn:local', code: 'hr' },
              { system: LOINC, code: '9279-1' },
            ],
          },
          component: [{ code: loinc('8480-6') }, { code: loinc('8310-5') }],
        }),
      ),
      [
        [
          'error',
          'code-invalid',
          'Observation.code',
          `urn:local|hr, ${LOINC}|9279-1 is not in ValueSet ${VS}/bound-vitals (${why('required', 'Observation.code')})`,
        ],
        [
          'error',
          'code-invalid',
          'Observation.component.code',
          `${LOINC}|8310-5 is not in ValueSet ${VS}/bound-vitals (${why('required', 'Observation.component.code')})`,
        ],
      ],
    );
    // Extensible: a warning; a ValueSet not held here: a warning that the element was not checked.
    assert.deepEqual(await validate(observation({ method: loinc('1234-5'), bodySite: { text: 'arm' } })), [
      [
        'warning',
        'code-invalid',
        'Observation.method',
        `${LOINC}|1234-5 is not in ValueSet ${VS}/bound-vitals (${why('extensible', 'Observation.method')})`,
      ],
      ['information', 'informational', undefined, `no errors: the resource conforms to ${url}`],
    ]);
    const notHere = await validate(observation({ bodySite: loinc('x') }));
    assert.deepEqual(notHere[0]?.slice(0, 3), ['warning', 'not-supported', 'Observation.bodySite']);
    assert.match(
      String(notHere[0]?.[3]),
      /was not checked against ValueSet .*not-here .*: no ValueSet .*not-here in this vault/,
    );
    // R4's own required binding (status) is checked as ever, not again as the profile's.
    assert.deepEqual(
      (await validate(observation({ status: 'done' }))).map((i) => [i[0], i[2]]),
      [['error', 'Observation.status']],
    );
    // A caller that may read StructureDefinitions but not ValueSets is told the codes were not checked.
    const profilesOnly = await grantedClient(p, 'vv-profiles', 'system/Observation.c system/StructureDefinition.rs', [
      'vv',
    ]);
    const unread = await validate(observation({ code: loinc('9279-1') }), profilesOnly);
    assert.deepEqual(unread[0]?.slice(0, 3), ['warning', 'not-supported', 'Observation.code']);
    assert.match(String(unread[0]?.[3]), /reads ValueSet resources/);
  });

  test('mode update and delete on an instance: the id must match; at the type level they are refused', async () => {
    const good = await fhir(p, writer, 'POST', '/vv/Observation/o-1/$validate?mode=update', {
      ...validObservation,
      id: 'o-1',
    });
    assert.deepEqual(
      issuesOf(good).map((i) => i.severity),
      ['information'],
      good.text,
    );
    const other = await fhir(p, writer, 'POST', '/vv/Observation/o-1/$validate?mode=update', {
      ...validObservation,
      id: 'o-2',
    });
    assert.deepEqual(
      issuesOf(other).map((i) => [i.severity, i.expression?.[0]]),
      [['error', 'Observation.id']],
    );
    const none = await fhir(p, writer, 'POST', '/vv/Observation/o-1/$validate?mode=update', validObservation);
    assert.deepEqual(
      issuesOf(none).map((i) => [i.code, i.expression?.[0]]),
      [['required', 'Observation.id']],
    );
    const del = await fhir(p, writer, 'POST', '/vv/Observation/o-1/$validate?mode=delete');
    assert.equal(del.status, 200, del.text);
    assert.match(issuesOf(del)[0]?.diagnostics ?? '', /the delete of Observation\/o-1 would be accepted/);
    for (const mode of ['update', 'delete']) {
      const r = await fhir(p, writer, 'POST', `/vv/Observation/$validate?mode=${mode}`, validObservation);
      assert.equal(r.status, 400, r.text);
      assert.match(r.text, /Observation\/\[id\]\/\$validate/);
    }
    // Routed beside the operations on Patient and Measure instances and types.
    const patient = await fhir(p, writer, 'POST', '/vv/Patient/p-1/$validate', { resourceType: 'Patient', id: 'p-1' });
    assert.equal(patient.status, 200, patient.text);
    const measure = await fhir(p, writer, 'POST', '/vv/Measure/$validate', {
      resourceType: 'Measure',
      status: 'draft',
    });
    assert.equal(measure.status, 200, measure.text);
  });

  test('GET of $validate is 405 with Allow: POST; an operation this server lacks is 400, not a bad id', async () => {
    for (const path of ['/vv/Observation/$validate', '/vv/Observation/o-1/$validate?mode=delete']) {
      const r = await fhir(p, writer, 'GET', path);
      assert.equal(r.status, 405, r.text);
      assert.equal(r.headers.get('allow'), 'POST');
      assert.match(r.text, /takes the resource in the body of a POST/);
    }
    for (const [method, name] of [
      ['GET', 'nope'],
      ['PUT', 'validate'],
      ['DELETE', 'everything'],
    ] as const) {
      const body = method === 'PUT' ? { resourceType: 'Patient' } : undefined;
      const r = await fhir(p, writer, method, `/vv/Patient/$${name}`, body);
      assert.equal(r.status, 400, r.text);
      assert.equal((r.json as { issue: { code: string }[] }).issue[0]?.code, 'not-supported');
      assert.match(r.text, new RegExp(`${method} Patient/\\$${name}: no such operation here`));
    }
  });

  test("the caller needs the permission of the mode's interaction, in a vault it may use", async () => {
    const asReader = await fhir(p, reader, 'POST', '/vv/Observation/$validate', validObservation);
    assert.equal(asReader.status, 403, asReader.text);
    const update = await fhir(p, updater, 'POST', '/vv/Observation/o-1/$validate?mode=update', {
      ...validObservation,
      id: 'o-1',
    });
    assert.equal(update.status, 200, update.text);
    assert.equal((await fhir(p, updater, 'POST', '/vv/Observation/o-1/$validate?mode=delete')).status, 403);
    assert.equal((await fhir(p, updater, 'POST', '/vv/Observation/$validate', validObservation)).status, 403);
    const elsewhere = await fhir(p, writer, 'POST', '/other/Observation/$validate', validObservation);
    assert.equal(elsewhere.status, 404, elsewhere.text);
    assert.equal((await fhir(p, undefined, 'POST', '/vv/Observation/$validate', validObservation)).status, 401);
  });

  test('is audited as an operation, and the CapabilityStatement lists it', async () => {
    const requestId = `validate-${Date.now()}`;
    await fhir(p, writer, 'POST', '/vv/Observation/$validate', validObservation, { 'x-request-id': requestId });
    const audit = await p.fetch(`${p.base}/audit/AuditEvent?request-id=${requestId}`, {
      dispatcher: p.agent(),
      headers: { authorization: `Bearer ${auditor.token}` },
    });
    const events =
      ((await audit.json()) as { entry?: { resource: { outcome: string; subtype?: { code: string }[] } }[] }).entry ??
      [];
    assert.equal(events.length, 1);
    assert.equal(events[0]?.resource.outcome, '0');
    assert.ok(
      events[0]?.resource.subtype?.some((s) => s.code === 'operation'),
      JSON.stringify(events[0]),
    );
    const cs = await fhir(p, undefined, 'GET', '/vv/metadata');
    const ops = (cs.json as { rest: { operation: { name: string }[] }[] }).rest[0]?.operation.map((o) => o.name);
    assert.ok(ops?.includes('validate'), JSON.stringify(ops));
  });
});
