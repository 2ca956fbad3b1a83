import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// Issue 5 §5 (seed 002, standards §M): X-Provenance on writes, Measure/$submit-data with a submission policy,
// Measure/$data-requirements.

const ORG_OID = '2.16.840.1.113883.2.4.3.8';
const PROVENANCE = {
  resourceType: 'Provenance',
  recorded: '2026-11-23T10:00:00Z',
  reason: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'HQUALIMP' }] }],
  agent: [
    {
      type: {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type', code: 'enterer' }],
      },
      who: { reference: 'Practitioner/123' },
    },
  ],
};

let p: TestPlatform;
let submitter: Caller;
let otherOrg: Caller;

before(async () => {
  p = await startPlatform();
  await partition(p, 'quality');
  submitter = await secretClient(p, 'umcg', 'system/*.cruds', { orgOid: ORG_OID, orgName: 'UMCG' });
  await grant(p, { partition: 'quality', client: 'umcg', scope: 'system/*.cruds' });
  otherOrg = await secretClient(p, 'other-clinic', 'system/*.cruds', { orgOid: '2.16.840.1.113883.2.4.3.95' });
  await grant(p, { partition: 'quality', client: 'other-clinic', scope: 'system/*.cruds' });
  const put = async (r: Record<string, unknown>) => {
    const res = await fhir(p, submitter, 'PUT', `/quality/${r.resourceType}/${r.id}`, r);
    assert.ok(res.status < 300, res.text);
  };
  await put({
    resourceType: 'Organization',
    id: 'umcg',
    name: 'UMCG',
    identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:oid:${ORG_OID}` }],
  });
  await put({
    resourceType: 'Library',
    id: 'cms130',
    url: 'http://example.org/Library/CMS130',
    version: '1.0',
    status: 'active',
    type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/library-type', code: 'logic-library' }] },
    dataRequirement: [
      { type: 'Procedure', codeFilter: [{ path: 'code', valueSet: 'http://example.org/ValueSet/colonoscopy' }] },
    ],
  });
  await put({
    resourceType: 'Measure',
    id: 'cms130',
    url: 'http://example.org/Measure/CMS130',
    status: 'active',
    library: ['http://example.org/Library/CMS130|1.0'],
    effectivePeriod: { start: '2026-01-01', end: '2026-12-31' },
  });
});
after(() => p.stop());

const header = (v: unknown) => ({ 'x-provenance': typeof v === 'string' ? v : JSON.stringify(v) });
const obs = { resourceType: 'Observation', status: 'final', code: { text: 'HbA1c' } };

describe('X-Provenance (M05–M07)', () => {
  test('create: the server stores the Provenance targeting the new version and echoes it', async () => {
    const r = await fhir(p, submitter, 'POST', '/quality/Observation', obs, header(PROVENANCE));
    assert.equal(r.status, 201);
    const id = (r.json as { id: string }).id;
    const echoed = JSON.parse(r.headers.get('x-provenance') as string) as {
      id: string;
      target: { reference: string }[];
    };
    assert.deepEqual(echoed.target, [{ reference: `Observation/${id}/_history/1` }]);
    const stored = await fhir(p, submitter, 'GET', `/quality/Provenance/${echoed.id}`);
    assert.equal(stored.status, 200);
    assert.equal((stored.json.agent as { who: { reference: string } }[])[0]?.who.reference, 'Practitioner/123');
    const found = await fhir(p, submitter, 'GET', `/quality/Provenance?target=Observation/${id}`);
    assert.equal((found.json.entry as unknown[]).length, 1);
  });

  test('a transaction gets one Provenance targeting every written version; a matched conditional create none', async () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'PUT', url: 'Observation/tx-1' }, resource: { ...obs, id: 'tx-1' } },
        { request: { method: 'PUT', url: 'Observation/tx-2' }, resource: { ...obs, id: 'tx-2' } },
      ],
    };
    const r = await fhir(p, submitter, 'POST', '/quality', bundle, header(PROVENANCE));
    assert.equal(r.status, 200);
    const echoed = JSON.parse(r.headers.get('x-provenance') as string) as { target: { reference: string }[] };
    assert.deepEqual(echoed.target.map((t) => t.reference).sort(), [
      'Observation/tx-1/_history/1',
      'Observation/tx-2/_history/1',
    ]);
    const before = (await fhir(p, submitter, 'GET', '/quality/Provenance?_summary=count')).json.total;
    const again = await fhir(
      p,
      submitter,
      'POST',
      '/quality/Observation',
      { ...obs, identifier: [{ value: 'x' }] },
      {
        ...header(PROVENANCE),
        'if-none-exist': '_id=tx-1',
      },
    );
    assert.equal(again.status, 200);
    assert.equal(again.headers.get('x-provenance'), null);
    assert.equal((await fhir(p, submitter, 'GET', '/quality/Provenance?_summary=count')).json.total, before);
  });

  test('the caller must be allowed to create Provenance to send one', async () => {
    const narrow = await secretClient(p, 'obs-only', 'system/Observation.cruds');
    await grant(p, { partition: 'quality', client: 'obs-only', scope: 'system/Observation.cruds' });
    assert.equal((await fhir(p, narrow, 'POST', '/quality/Observation', obs, header(PROVENANCE))).status, 403);
    assert.equal((await fhir(p, narrow, 'POST', '/quality/Observation', obs)).status, 201);
  });

  test('M06: not JSON, not a Provenance, a target, no agent → 400 and nothing stored', async () => {
    const before = (await fhir(p, submitter, 'GET', '/quality/Observation?_summary=count')).json.total;
    for (const bad of [
      '{oops',
      { resourceType: 'Patient' },
      { ...PROVENANCE, target: [{ reference: 'Patient/1' }] },
      { ...PROVENANCE, agent: [] },
    ]) {
      const r = await fhir(p, submitter, 'POST', '/quality/Observation', obs, header(bad));
      assert.equal(r.status, 400, JSON.stringify(bad));
    }
    assert.equal((await fhir(p, submitter, 'GET', '/quality/Observation?_summary=count')).json.total, before);
  });
});

function submission(reporter: string, extra: Record<string, unknown> = {}) {
  return {
    resourceType: 'Parameters',
    parameter: [
      {
        name: 'measurereport',
        resource: {
          resourceType: 'MeasureReport',
          id: 'mr-1',
          status: 'complete',
          type: 'data-collection',
          measure: 'http://example.org/Measure/CMS130|1.0',
          subject: { reference: 'Patient/pat-1' },
          period: { start: '2026-01-01', end: '2026-12-31' },
          reporter: { reference: reporter },
          ...extra,
        },
      },
      { name: 'resource', resource: { resourceType: 'Patient', id: 'pat-1', gender: 'female' } },
      {
        name: 'resource',
        resource: {
          resourceType: 'Procedure',
          id: 'proc-1',
          status: 'completed',
          subject: { reference: 'Patient/pat-1' },
          code: { text: 'colonoscopy' },
        },
      },
    ],
  };
}

describe('Measure/$submit-data (M01–M04) and the submission policy', () => {
  test('a submission round trip: 200, the MeasureReport and resources stored, Provenance echoed, audited', async () => {
    const r = await fhir(
      p,
      submitter,
      'POST',
      '/quality/Measure/cms130/$submit-data',
      submission('Organization/umcg'),
      {
        ...header(PROVENANCE),
        'x-request-id': 'deqm-1',
      },
    );
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.type, 'transaction-response');
    for (const path of ['MeasureReport/mr-1', 'Patient/pat-1', 'Procedure/proc-1']) {
      assert.equal((await fhir(p, submitter, 'GET', `/quality/${path}`)).status, 200, path);
    }
    const echoed = JSON.parse(r.headers.get('x-provenance') as string) as { target: { reference: string }[] };
    assert.equal(echoed.target.length, 3);
    const { events } = await p.store.audit.search({ requestId: 'deqm-1', limit: 100, offset: 0 });
    const subtypes = events.map((e) => (JSON.parse(e) as { subtype: { code: string }[] }).subtype[0]?.code).sort();
    // The program authorization, three resources plus the Provenance (update/create events), the operation.
    assert.deepEqual(subtypes, ['create', 'operation', 'program-authorization', 'update', 'update', 'update']);
    // The operation's event names every persisted resource and the Provenance.
    const operation = events
      .map((e) => JSON.parse(e) as { subtype: { code: string }[]; entity?: { what?: { reference?: string } }[] })
      .find((e) => e.subtype[0]?.code === 'operation');
    const what = (operation?.entity ?? []).flatMap((x) =>
      x.what?.reference ? [x.what.reference.replace(/\/_history\/\d+$/, '')] : [],
    );
    for (const ref of ['MeasureReport/mr-1', 'Patient/pat-1', 'Procedure/proc-1']) assert.ok(what.includes(ref), ref);
    assert.ok(
      what.some((w) => w.startsWith('Provenance/')),
      JSON.stringify(what),
    );
  });

  test('403 (and a Security Alert) when the client submits for an Organization it is not', async () => {
    const r = await fhir(p, otherOrg, 'POST', '/quality/Measure/cms130/$submit-data', submission('Organization/umcg'), {
      'x-request-id': 'deqm-forbidden',
    });
    assert.equal(r.status, 403);
    const { events } = await p.store.audit.search({ requestId: 'deqm-forbidden', limit: 10, offset: 0 });
    assert.equal((JSON.parse(events[0] as string) as { type: { code: string } }).type.code, '110113');
  });

  test('bad submissions: unknown measure 404, wrong report type, bad update type, not Parameters → 400', async () => {
    assert.equal(
      (await fhir(p, submitter, 'POST', '/quality/Measure/nope/$submit-data', submission('Organization/umcg'))).status,
      404,
    );
    assert.equal(
      (
        await fhir(
          p,
          submitter,
          'POST',
          '/quality/Measure/cms130/$submit-data',
          submission('Organization/umcg', { type: 'summary' }),
        )
      ).status,
      400,
    );
    const badUpdate = submission('Organization/umcg', {
      extension: [
        {
          url: 'http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-submitDataUpdateType',
          valueCode: 'sometimes',
        },
      ],
    });
    assert.equal((await fhir(p, submitter, 'POST', '/quality/Measure/cms130/$submit-data', badUpdate)).status, 400);
    assert.equal(
      (await fhir(p, submitter, 'POST', '/quality/Measure/cms130/$submit-data', { resourceType: 'Patient' })).status,
      400,
    );
    // The core R4 parameter name works too (X9).
    const core = submission('Organization/umcg');
    (core.parameter[0] as { name: string }).name = 'measureReport';
    assert.equal((await fhir(p, submitter, 'POST', '/quality/Measure/$submit-data', core)).status, 200);
  });

  test('$data-requirements needs the compiled ELM: a Library without it is named in a 422', async () => {
    const r = await fhir(
      p,
      submitter,
      'GET',
      '/quality/Measure/cms130/$data-requirements?periodStart=2026-01-01&periodEnd=2026-06-30',
    );
    assert.equal(r.status, 422);
    assert.match(r.text, /Library http:\/\/example.org\/Library\/CMS130 has no compiled ELM/);
    assert.equal((await fhir(p, submitter, 'GET', '/quality/Measure/nope/$data-requirements')).status, 404);
    assert.equal(
      (await fhir(p, submitter, 'GET', '/quality/Measure/cms130/$data-requirements?periodStart=soon')).status,
      400,
    );
  });
});
