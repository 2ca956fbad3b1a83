import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Bundle, CapabilityStatement, Patient } from 'fhir/r4.js';
import { Client } from 'fhir-kit-client';
import { Agent, setGlobalDispatcher } from 'undici';
import { account, grant, mtlsClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// fhir-kit-client, a third-party FHIR client, against the running HTTPS server with a real,
// certificate-bound token (it uses the global fetch, so the mTLS agent is installed globally in this process).
let p: TestPlatform;
let client: InstanceType<typeof Client>;

before(async () => {
  p = await startPlatform();
  await account(p, 'urn:cara:account:kit_1');
  const tcu = await mtlsClient(p, 'kit-tcu', 'system/*.cruds');
  await grant(p, { partition: 'kit_1', client: 'kit-tcu', scope: 'system/*.cruds' });
  setGlobalDispatcher(new Agent({ connect: { ca: p.ca, cert: tcu.pair?.cert, key: tcu.pair?.key } }));
  client = new Client({ baseUrl: `${p.fhirBase}/kit_1`, bearerToken: tcu.token });
});
after(() => p.stop());

test('fhir-kit-client: capabilityStatement, create, read, update, vread, history, search, transaction, delete', async () => {
  const cs = (await client.capabilityStatement()) as unknown as CapabilityStatement;
  assert.equal(cs.fhirVersion, '4.0.1');
  assert.deepEqual(cs.rest?.[0]?.compartment, ['http://hl7.org/fhir/CompartmentDefinition/patient']);

  const created = (await client.create({
    resourceType: 'Patient',
    body: { resourceType: 'Patient', name: [{ family: 'Kit', given: ['Fhir'] }], birthDate: '2010-05-01' },
  })) as unknown as Patient & { id: string };
  assert.ok(created.id);
  assert.equal(created.meta?.versionId, '1');

  const read = (await client.read({ resourceType: 'Patient', id: created.id })) as unknown as Patient;
  assert.equal(read.birthDate, '2010-05-01');

  const updated = (await client.update({
    resourceType: 'Patient',
    id: created.id,
    body: { ...read, birthDate: '2010-05-02' } as never,
  })) as unknown as Patient;
  assert.equal(updated.meta?.versionId, '2');

  const v1 = (await client.vread({ resourceType: 'Patient', id: created.id, version: '1' })) as unknown as Patient;
  assert.equal(v1.birthDate, '2010-05-01');

  const history = (await client.history({ resourceType: 'Patient', id: created.id })) as unknown as Bundle;
  assert.equal(history.type, 'history');
  assert.equal(history.entry?.length, 2);

  const found = (await client.search({
    resourceType: 'Patient',
    searchParams: { family: 'kit', birthdate: 'ge2010' },
  })) as unknown as Bundle;
  assert.equal(found.type, 'searchset');
  assert.deepEqual(
    found.entry?.map((e) => e.resource?.id),
    [created.id],
  );

  const tx = (await client.transaction({
    body: {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: 'urn:uuid:0c3e4a4e-1111-4b1b-9d5e-000000000001',
          resource: {
            resourceType: 'Encounter',
            status: 'finished',
            class: { code: 'AMB' },
            subject: { reference: `Patient/${created.id}` },
          },
          request: { method: 'POST', url: 'Encounter' },
        },
        {
          resource: {
            resourceType: 'Observation',
            status: 'final',
            code: { text: 'kit' },
            subject: { reference: `Patient/${created.id}` },
            encounter: { reference: 'urn:uuid:0c3e4a4e-1111-4b1b-9d5e-000000000001' },
          },
          request: { method: 'POST', url: 'Observation' },
        },
      ],
    } as never,
  })) as unknown as Bundle;
  assert.equal(tx.type, 'transaction-response');
  assert.deepEqual(
    tx.entry?.map((e) => e.response?.status),
    ['201 Created', '201 Created'],
  );
  const obs = (await client.search({
    resourceType: 'Observation',
    searchParams: { patient: created.id, _include: 'Observation:encounter' },
  })) as unknown as Bundle;
  assert.deepEqual(
    obs.entry?.map((e) => e.search?.mode),
    ['match', 'include'],
  );

  await client.delete({ resourceType: 'Patient', id: created.id });
  await assert.rejects(
    client.read({ resourceType: 'Patient', id: created.id }),
    (err: { response?: { status: number } }) => {
      assert.equal(err.response?.status, 410);
      return true;
    },
  );
});

test('fhir-kit-client: nextPage and prevPage follow the server-written links', async () => {
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    const b = (await client.create({
      resourceType: 'Basic',
      body: { resourceType: 'Basic', code: { text: `page ${i}` } },
    })) as unknown as { id: string };
    ids.push(b.id);
  }
  const seen: string[] = [];
  let page = (await client.search({ resourceType: 'Basic', searchParams: { _count: 2 } })) as unknown as Bundle;
  const pages: Bundle[] = [page];
  for (;;) {
    seen.push(...(page.entry ?? []).map((e) => e.resource?.id as string));
    const next = (await client.nextPage({ bundle: page as never })) as unknown as Bundle | undefined;
    if (!next) break;
    page = next;
    pages.push(page);
  }
  assert.deepEqual(seen, ids, 'every Basic once, in the order written');
  assert.equal(pages.length, 3);
  const back = (await client.prevPage({ bundle: pages[2] as never })) as unknown as Bundle;
  assert.deepEqual(
    back.entry?.map((e) => e.resource?.id),
    ids.slice(2, 4),
  );
});

test('fhir-kit-client: $validate on a type and on an instance answers an OperationOutcome', async () => {
  type Outcome = { resourceType: string; issue: { severity: string; expression?: string[] }[] };
  const validate = (id: string | undefined, resource: Record<string, unknown>, mode?: string) =>
    client.operation({
      name: '$validate',
      resourceType: 'Patient',
      ...(id ? { id } : {}),
      input: {
        resourceType: 'Parameters',
        parameter: [{ name: 'resource', resource }, ...(mode ? [{ name: 'mode', valueCode: mode }] : [])],
      },
    }) as unknown as Promise<Outcome>;
  const fine = await validate(undefined, { resourceType: 'Patient', gender: 'female' });
  assert.equal(fine.resourceType, 'OperationOutcome');
  assert.deepEqual(
    fine.issue.map((i) => i.severity),
    ['information'],
  );
  const wrong = await validate('kit-p', { resourceType: 'Patient', id: 'kit-p', gender: 'f' }, 'update');
  assert.deepEqual(
    wrong.issue.map((i) => [i.severity, i.expression?.[0]]),
    [['error', 'Patient.gender']],
  );
});

test('fhir-kit-client: searches with :in (a ValueSet of the vault), :identifier and :of-type', async () => {
  const LOINC = 'http://loinc.org';
  const BSN = 'http://fhir.nl/fhir/NamingSystem/bsn';
  await client.update({
    resourceType: 'ValueSet',
    id: 'kit-vitals',
    body: {
      resourceType: 'ValueSet',
      id: 'kit-vitals',
      url: 'http://example.org/fhir/ValueSet/kit-vitals',
      status: 'active',
      compose: { include: [{ system: LOINC, concept: [{ code: '8867-4' }, { code: '8480-6' }] }] },
    } as never,
  });
  for (const [id, code] of [
    ['kit-hr', '8867-4'],
    ['kit-temp', '8310-5'],
  ]) {
    await client.update({
      resourceType: 'Observation',
      id: id as string,
      body: {
        resourceType: 'Observation',
        id,
        status: 'final',
        code: { coding: [{ system: LOINC, code }] },
        subject: { identifier: { system: BSN, value: '999911120' } },
      } as never,
    });
  }
  await client.update({
    resourceType: 'Patient',
    id: 'kit-mr',
    body: {
      resourceType: 'Patient',
      id: 'kit-mr',
      identifier: [
        { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] }, value: 'K-1' },
      ],
    } as never,
  });
  const ids = async (resourceType: string, searchParams: Record<string, string>) =>
    (((await client.search({ resourceType, searchParams })) as unknown as Bundle).entry ?? [])
      .map((e) => e.resource?.id)
      .sort();
  assert.deepEqual(await ids('Observation', { 'code:in': 'http://example.org/fhir/ValueSet/kit-vitals' }), ['kit-hr']);
  assert.deepEqual(
    await ids('Observation', { 'code:not-in': 'ValueSet/kit-vitals', 'subject:identifier': `${BSN}|999911120` }),
    ['kit-temp'],
  );
  assert.deepEqual(
    await ids('Patient', { 'identifier:of-type': 'http://terminology.hl7.org/CodeSystem/v2-0203|MR|K-1' }),
    ['kit-mr'],
  );
});

test('fhir-kit-client: CodeSystem $lookup, ValueSet $validate-code and _list', async () => {
  const system = 'http://example.org/cs/kit-triage';
  await client.update({
    resourceType: 'CodeSystem',
    id: 'kit-triage',
    body: {
      resourceType: 'CodeSystem',
      id: 'kit-triage',
      url: system,
      name: 'KitTriage',
      status: 'active',
      content: 'complete',
      concept: [
        { code: 'urgent', display: 'Urgent' },
        { code: 'routine', display: 'Routine' },
      ],
    } as never,
  });
  await client.update({
    resourceType: 'ValueSet',
    id: 'kit-triage-all',
    body: {
      resourceType: 'ValueSet',
      id: 'kit-triage-all',
      status: 'active',
      compose: { include: [{ system }] },
    } as never,
  });
  type Parameters = { parameter: { name: string; valueString?: string; valueBoolean?: boolean }[] };
  const looked = (await client.operation({
    name: '$lookup',
    resourceType: 'CodeSystem',
    method: 'GET',
    input: { system, code: 'urgent' },
  })) as unknown as Parameters;
  assert.deepEqual(
    looked.parameter.map((x) => [x.name, x.valueString]),
    [
      ['name', 'KitTriage'],
      ['display', 'Urgent'],
    ],
  );
  const validated = (await client.operation({
    name: '$validate-code',
    resourceType: 'ValueSet',
    id: 'kit-triage-all',
    input: { resourceType: 'Parameters', parameter: [{ name: 'coding', valueCoding: { system, code: 'routine' } }] },
  })) as unknown as Parameters;
  assert.equal(validated.parameter.find((x) => x.name === 'result')?.valueBoolean, true);
  await client.update({
    resourceType: 'List',
    id: 'kit-list',
    body: {
      resourceType: 'List',
      id: 'kit-list',
      status: 'current',
      mode: 'working',
      entry: [{ item: { reference: 'Patient/kit-mr' } }],
    } as never,
  });
  const listed = (await client.search({
    resourceType: 'Patient',
    searchParams: { _list: 'kit-list' },
  })) as unknown as Bundle;
  assert.deepEqual(
    listed.entry?.map((e) => e.resource?.id),
    ['kit-mr'],
  );
});

test('fhir-kit-client: $expand of a ValueSet filtered by is-a, and ConceptMap $translate both ways', async () => {
  const system = 'http://example.org/cs/kit-body';
  const target = 'http://example.org/cs/kit-legacy';
  const put = (body: { resourceType: string; id: string } & Record<string, unknown>) =>
    client.update({ resourceType: body.resourceType, id: body.id, body: body as never });
  await put({
    resourceType: 'CodeSystem',
    id: 'kit-body',
    url: system,
    status: 'active',
    content: 'complete',
    concept: [
      { code: 'limb', concept: [{ code: 'arm', concept: [{ code: 'hand' }] }, { code: 'leg' }] },
      { code: 'head' },
    ],
  });
  await put({
    resourceType: 'ValueSet',
    id: 'kit-limbs',
    url: 'http://example.org/vs/kit-limbs',
    status: 'active',
    compose: { include: [{ system, filter: [{ property: 'concept', op: 'is-a', value: 'arm' }] }] },
  });
  type Expansion = { expansion: { total: number; contains: { code: string }[] } };
  const expanded = (await client.operation({
    name: '$expand',
    resourceType: 'ValueSet',
    id: 'kit-limbs',
    method: 'GET',
  })) as unknown as Expansion;
  assert.deepEqual(expanded.expansion.contains.map((c) => c.code).sort(), ['arm', 'hand']);

  await put({
    resourceType: 'ConceptMap',
    id: 'kit-map',
    url: 'http://example.org/cm/kit-map',
    status: 'active',
    group: [
      {
        source: system,
        target,
        element: [
          { code: 'hand', target: [{ code: 'H', equivalence: 'equivalent' }] },
          { code: 'arm', target: [{ code: 'UPPER', equivalence: 'wider' }] },
        ],
      },
    ],
  });
  type Parameters = { parameter: { name: string; valueBoolean?: boolean; part?: Parameters['parameter'] }[] };
  type Part = { name: string; valueCode?: string; valueCoding?: { code: string } };
  const matches = (out: Parameters) =>
    out.parameter
      .filter((x) => x.name === 'match')
      .map((m) => {
        const parts = (m.part ?? []) as Part[];
        return `${parts.find((x) => x.name === 'equivalence')?.valueCode} ${parts.find((x) => x.name === 'concept')?.valueCoding?.code}`;
      });
  const forward = (await client.operation({
    name: '$translate',
    resourceType: 'ConceptMap',
    method: 'GET',
    input: { system, code: 'arm' },
  })) as unknown as Parameters;
  assert.equal(forward.parameter.find((x) => x.name === 'result')?.valueBoolean, true);
  assert.deepEqual(matches(forward), ['wider UPPER']);
  const reverse = (await client.operation({
    name: '$translate',
    resourceType: 'ConceptMap',
    id: 'kit-map',
    input: {
      resourceType: 'Parameters',
      parameter: [
        { name: 'coding', valueCoding: { system: target, code: 'UPPER' } },
        { name: 'reverse', valueBoolean: true },
      ],
    },
  })) as unknown as Parameters;
  assert.deepEqual(matches(reverse), ['narrower arm']);
});

test('fhir-kit-client: compartmentSearch finds the patient’s resources of a type, by GET and by POST _search', async () => {
  const patient = async (family: string) =>
    (
      (await client.create({
        resourceType: 'Patient',
        body: { resourceType: 'Patient', name: [{ family }] },
      })) as unknown as { id: string }
    ).id;
  const [ann, ben] = [await patient('Ann'), await patient('Ben')];
  const observe = async (subject: string, text: string) =>
    (
      (await client.create({
        resourceType: 'Observation',
        body: {
          resourceType: 'Observation',
          status: 'final',
          code: { text },
          subject: { reference: `Patient/${subject}` },
        },
      })) as unknown as { id: string }
    ).id;
  const annWeight = await observe(ann, 'weight');
  const annPulse = await observe(ann, 'pulse');
  await observe(ben, 'weight');
  const compartment = { resourceType: 'Patient', id: ann };
  const ids = (b: unknown) => ((b as Bundle).entry ?? []).map((e) => e.resource?.id).sort();

  const all = await client.compartmentSearch({ resourceType: 'Observation', compartment, searchParams: {} });
  assert.deepEqual(ids(all), [annWeight, annPulse].sort());
  const weight = await client.compartmentSearch({
    resourceType: 'Observation',
    compartment,
    searchParams: { 'code:text': 'weight' },
    options: { postSearch: true },
  });
  assert.deepEqual(ids(weight), [annWeight]);
  const self = (weight as unknown as Bundle).link?.find((l) => l.relation === 'self')?.url ?? '';
  assert.ok(self.startsWith(`${p.fhirBase}/kit_1/Patient/${ann}/Observation?`), self);
  const none = await client.compartmentSearch({
    resourceType: 'Observation',
    compartment: { resourceType: 'Patient', id: 'no-such-patient' },
    searchParams: {},
  });
  assert.deepEqual(ids(none), [], 'no patient: an empty searchset, as any search that matches nothing');
});
