import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { account, type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// Batch and transaction Bundles (http.html#transaction, J43–J47, I17).
let p: TestPlatform;
let tcu: Caller;

type Resp = {
  entry: {
    resource?: Record<string, unknown>;
    response: { status: string; location?: string; etag?: string; outcome?: { issue: { code: string }[] } };
  }[];
};

const bundle = (type: 'batch' | 'transaction', entry: unknown[]) => ({ resourceType: 'Bundle', type, entry });
const post = (fullUrl: string, resource: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  fullUrl,
  resource,
  request: { method: 'POST', url: resource.resourceType, ...extra },
});

async function count(type: string, vault = 'tx'): Promise<number> {
  const r = await fhir(p, tcu, 'GET', `/${vault}/${type}?_summary=count`);
  return (r.json as { total: number }).total;
}

before(async () => {
  p = await startPlatform();
  await account(p, 'urn:cara:account:tx');
  await partition(p, 'elsewhere');
  tcu = await secretClient(p, 'bundle-tcu', 'system/*.cruds');
  await grant(p, { partition: 'tx', client: 'bundle-tcu', scope: 'system/*.cruds' });
  await grant(p, { partition: 'elsewhere', client: 'bundle-tcu', scope: 'system/*.cruds' });
});
after(() => p.stop());

describe('transaction', () => {
  test('urn:uuid references are rewritten to the assigned ids (J44)', async () => {
    const r = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('transaction', [
        post('urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a', {
          resourceType: 'Observation',
          status: 'final',
          code: { text: 'x' },
          subject: { reference: 'urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059' },
        }),
        post('urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059', { resourceType: 'Patient', name: [{ family: 'Tx' }] }),
      ]),
    );
    assert.equal(r.status, 200, r.text);
    const b = r.json as unknown as Resp & { type: string };
    assert.equal(b.type, 'transaction-response');
    assert.deepEqual(
      b.entry.map((e) => e.response.status),
      ['201 Created', '201 Created'],
    );
    const patientLoc = b.entry[1]?.response.location as string;
    assert.match(patientLoc, /^Patient\/[0-9a-f-]{36}\/_history\/1$/);
    const obs = await fhir(p, tcu, 'GET', `/tx/${String(b.entry[0]?.response.location).replace(/\/_history\/1$/, '')}`);
    assert.equal((obs.json.subject as { reference: string }).reference, patientLoc.replace(/\/_history\/1$/, ''));
  });

  test('one bad entry fails the whole transaction with one OperationOutcome; nothing is stored (J45)', async () => {
    const before = await count('Patient');
    const r = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('transaction', [
        post('urn:uuid:a1', { resourceType: 'Patient', name: [{ family: 'Never' }] }),
        {
          resource: { resourceType: 'Observation', id: 'mismatch' },
          request: { method: 'PUT', url: 'Observation/other' },
        },
      ]),
    );
    assert.equal(r.status, 400);
    assert.equal(r.json.resourceType, 'OperationOutcome');
    assert.match(r.text, /entry\[1\]/);
    assert.equal(await count('Patient'), before);
    const late = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('transaction', [
        post('urn:uuid:a2', { resourceType: 'Patient', name: [{ family: 'Never' }] }),
        {
          resource: { resourceType: 'Patient', id: 'p-match' },
          request: { method: 'PUT', url: 'Patient/p-match', ifMatch: 'W/"9"' },
        },
      ]),
    );
    assert.equal(late.status, 412, 'a failure during the writes rolls back the earlier writes');
    assert.equal(await count('Patient'), before);
  });

  test('two entries for one resource, and conditional references with 0 or 2 matches, fail (J46)', async () => {
    const dup = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('transaction', [
        { resource: { resourceType: 'Patient', id: 'twice' }, request: { method: 'PUT', url: 'Patient/twice' } },
        { request: { method: 'DELETE', url: 'Patient/twice' } },
      ]),
    );
    assert.equal(dup.status, 400);
    for (const id of ['o-a', 'o-b']) {
      await fhir(p, tcu, 'PUT', `/tx/Organization/${id}`, {
        resourceType: 'Organization',
        id,
        identifier: [{ system: 'urn:x', value: 'dup' }],
      });
    }
    for (const [ref, status] of [
      ['Organization?identifier=urn:x|none', 412],
      ['Organization?identifier=urn:x|dup', 412],
    ] as const) {
      const r = await fhir(
        p,
        tcu,
        'POST',
        '/tx',
        bundle('transaction', [
          post('urn:uuid:c1', { resourceType: 'Patient', managingOrganization: { reference: ref } }),
        ]),
      );
      assert.equal(r.status, status, r.text);
    }
    const unresolved = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('transaction', [
        post('urn:uuid:c2', { resourceType: 'Patient', managingOrganization: { reference: 'urn:uuid:nowhere' } }),
      ]),
    );
    assert.equal(unresolved.status, 400);
  });

  test('a conditional reference resolves to exactly one match, in this vault only', async () => {
    await fhir(p, tcu, 'PUT', '/tx/Organization/synthea-org', {
      resourceType: 'Organization',
      id: 'synthea-org',
      identifier: [{ system: 'https://github.com/synthetichealth/synthea', value: 'synthea-org' }],
    });
    await fhir(p, tcu, 'PUT', '/elsewhere/Organization/only-there', {
      resourceType: 'Organization',
      id: 'only-there',
      identifier: [{ system: 'urn:y', value: 'z' }],
    });
    const ok = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('transaction', [
        post('urn:uuid:c3', {
          resourceType: 'Patient',
          managingOrganization: {
            reference: 'Organization?identifier=https://github.com/synthetichealth/synthea|synthea-org',
          },
        }),
      ]),
    );
    assert.equal(ok.status, 200, ok.text);
    const id = String((ok.json as unknown as Resp).entry[0]?.response.location).split('/')[1];
    const patient = await fhir(p, tcu, 'GET', `/tx/Patient/${id}`);
    assert.equal((patient.json.managingOrganization as { reference: string }).reference, 'Organization/synthea-org');
    const other = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('transaction', [
        post('urn:uuid:c4', {
          resourceType: 'Patient',
          managingOrganization: { reference: 'Organization?identifier=urn:y|z' },
        }),
      ]),
    );
    assert.equal(other.status, 412, 'a match in another vault does not count');
  });

  test('DELETE → POST → PUT → GET regardless of entry order (J47)', async () => {
    await fhir(p, tcu, 'PUT', '/tx/Patient/ordered', { resourceType: 'Patient', id: 'ordered', gender: 'male' });
    await fhir(p, tcu, 'PUT', '/tx/Patient/doomed', { resourceType: 'Patient', id: 'doomed' });
    const r = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('transaction', [
        { request: { method: 'GET', url: 'Patient/ordered' } },
        { request: { method: 'GET', url: 'Patient?_id=doomed' } },
        {
          resource: { resourceType: 'Patient', id: 'ordered', gender: 'female' },
          request: { method: 'PUT', url: 'Patient/ordered' },
        },
        { request: { method: 'DELETE', url: 'Patient/doomed' } },
      ]),
    );
    assert.equal(r.status, 200, r.text);
    const b = r.json as unknown as Resp;
    assert.equal(b.entry[0]?.resource?.gender, 'female', 'the GET sees the PUT of the same transaction');
    assert.deepEqual(
      (b.entry[1]?.resource as { entry?: unknown[]; total?: number } | undefined)?.entry,
      undefined,
      'the search runs after the DELETE (an empty searchset has no entry array)',
    );
    assert.deepEqual(
      b.entry.map((e) => e.response.status),
      ['200 OK', '200 OK', '200 OK', '204 No Content'],
    );
  });

  test('conditional create (J15) and conditional update (J21)', async () => {
    const cond = (n: string) =>
      bundle('transaction', [
        post(
          'urn:uuid:cc',
          { resourceType: 'Patient', identifier: [{ system: 'urn:cc', value: n }] },
          { ifNoneExist: `identifier=urn:cc|${n}` },
        ),
      ]);
    const first = await fhir(p, tcu, 'POST', '/tx', cond('1'));
    assert.equal((first.json as unknown as Resp).entry[0]?.response.status, '201 Created');
    const again = await fhir(p, tcu, 'POST', '/tx', cond('1'));
    assert.equal((again.json as unknown as Resp).entry[0]?.response.status, '200 OK');
    assert.equal(
      await fhir(p, tcu, 'GET', '/tx/Patient?identifier=urn:cc|1&_summary=count').then(
        (r) => (r.json as { total: number }).total,
      ),
      1,
    );
    const upd = (gender: string) =>
      bundle('transaction', [
        {
          resource: { resourceType: 'Patient', identifier: [{ system: 'urn:cc', value: '2' }], gender },
          request: { method: 'PUT', url: 'Patient?identifier=urn:cc|2' },
        },
      ]);
    const created = (await fhir(p, tcu, 'POST', '/tx', upd('male'))).json as unknown as Resp;
    assert.equal(created.entry[0]?.response.status, '201 Created');
    const second = await fhir(p, tcu, 'POST', '/tx', upd('female'));
    assert.equal((second.json as unknown as Resp).entry[0]?.response.status, '200 OK');
    assert.match((second.json as unknown as Resp).entry[0]?.response.etag as string, /W\/"2"/);
  });
});

describe('batch', () => {
  test('entries are independent: failures stay in their entry, the rest commits (J43)', async () => {
    const r = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('batch', [
        post('urn:uuid:b1', { resourceType: 'Patient', name: [{ family: 'Batch1' }] }),
        { request: { method: 'GET', url: 'Patient/does-not-exist' } },
        post('urn:uuid:b3', { resourceType: 'Patient', name: [{ family: 'Batch3' }] }),
      ]),
    );
    assert.equal(r.status, 200);
    const b = r.json as unknown as Resp & { type: string };
    assert.equal(b.type, 'batch-response');
    assert.deepEqual(
      b.entry.map((e) => e.response.status),
      ['201 Created', '404 Not Found', '201 Created'],
    );
    assert.equal(b.entry[1]?.response.outcome?.issue[0]?.code, 'not-found');
    const found = await fhir(p, tcu, 'GET', '/tx/Patient?family=batch');
    assert.equal((found.json as { total: number }).total, 2);
  });

  test('CARA: a batch of PUT Observation/<uuid>, sent twice, keeps the ids and makes version 2 (seed 000)', async () => {
    const uuids = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];
    const make = () =>
      bundle(
        'batch',
        uuids.map((id) => ({
          resource: {
            resourceType: 'Observation',
            id,
            status: 'final',
            code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
            valueQuantity: { value: 70, unit: '/min' },
          },
          request: { method: 'PUT', url: `Observation/${id}` },
        })),
      );
    const first = (await fhir(p, tcu, 'POST', '/tx', make())).json as unknown as Resp;
    assert.deepEqual(
      first.entry.map((e) => e.response.status),
      ['201 Created', '201 Created', '201 Created'],
    );
    const second = (await fhir(p, tcu, 'POST', '/tx', make())).json as unknown as Resp;
    assert.deepEqual(
      second.entry.map((e) => e.response.status),
      ['200 OK', '200 OK', '200 OK'],
    );
    assert.deepEqual(
      second.entry.map((e) => e.response.location),
      uuids.map((id) => `Observation/${id}/_history/2`),
    );
    const search = await fhir(p, tcu, 'GET', `/tx/Observation?_id=${uuids.join(',')}&_total=accurate`);
    assert.equal((search.json as { total: number }).total, 3);
  });

  test('scopes are checked per entry (I17)', async () => {
    const { client_secret } = await p.register('obs-reader', {
      auth: 'client_secret_basic',
      scope: 'system/Observation.rs',
    });
    await grant(p, { partition: 'tx', client: 'obs-reader', scope: 'system/*.cruds' });
    const { tokenWithSecret } = await import('./helpers/fhir.ts');
    const reader = { token: await tokenWithSecret(p, 'obs-reader', client_secret as string) };
    const id = (
      await fhir(p, tcu, 'POST', '/tx/Observation', {
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'x' },
      })
    ).json.id as string;
    const r = await fhir(
      p,
      reader,
      'POST',
      '/tx',
      bundle('batch', [
        { request: { method: 'GET', url: `Observation/${id}` } },
        post('urn:uuid:x', { resourceType: 'Patient' }),
      ]),
    );
    assert.deepEqual(
      (r.json as unknown as Resp).entry.map((e) => e.response.status),
      ['200 OK', '403 Forbidden'],
    );
    const t = await fhir(
      p,
      reader,
      'POST',
      '/tx',
      bundle('transaction', [post('urn:uuid:y', { resourceType: 'Patient' })]),
    );
    assert.equal(t.status, 403);
  });

  test('malformed bundles are 400 OperationOutcomes', async () => {
    const cases: unknown[] = [
      { resourceType: 'Patient' },
      { resourceType: 'Bundle', type: 'collection', entry: [] },
      { resourceType: 'Bundle', type: 'transaction', entry: {} },
      bundle('transaction', [{ request: { method: 'PATCHY', url: 'Patient/1' } }]),
      bundle('transaction', [{ request: { method: 'GET', url: 'https://evil.example/fhir/Patient/1' } }]),
      bundle('transaction', [{ request: { method: 'POST', url: 'Patient' } }]),
      bundle('transaction', [{ resource: { resourceType: 'Patient' }, request: { method: 'POST', url: 'NotAType' } }]),
    ];
    for (const body of cases) {
      const r = await fhir(p, tcu, 'POST', '/tx', body);
      assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.text}`);
      assert.equal(r.json.resourceType, 'OperationOutcome');
    }
  });
});
