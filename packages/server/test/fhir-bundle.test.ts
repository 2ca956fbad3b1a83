import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { account, type Caller, fhir, grant, grantedClient, partition } from './helpers/fhir.ts';
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

/** A PATCH entry: the JSON Patch in a Binary (http.html#patch). */
const patchEntry = (url: string, operations: unknown[], request: Record<string, unknown> = {}) => ({
  resource: {
    resourceType: 'Binary',
    contentType: 'application/json-patch+json',
    data: Buffer.from(JSON.stringify(operations)).toString('base64'),
  },
  request: { method: 'PATCH', url, ...request },
});

async function count(type: string, vault = 'tx'): Promise<number> {
  const r = await fhir(p, tcu, 'GET', `/${vault}/${type}?_summary=count`);
  return (r.json as { total: number }).total;
}

before(async () => {
  p = await startPlatform();
  await account(p, 'urn:cara:account:tx');
  await partition(p, 'elsewhere');
  tcu = await grantedClient(p, 'bundle-tcu', 'system/*.cruds', ['tx', 'elsewhere']);
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

  test('an invalid resource fails the transaction naming its entry and the path within the Bundle', async () => {
    const before = await count('Endpoint');
    const r = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('transaction', [
        post('urn:uuid:e1', { resourceType: 'Patient', name: [{ family: 'Never' }] }),
        post('urn:uuid:e2', { resourceType: 'Observation', status: 'final', code: { text: 'x' } }),
        post('urn:uuid:e3', { resourceType: 'Endpoint', status: 'active', address: 'https://example.org/fhir' }),
      ]),
    );
    assert.equal(r.status, 422);
    const issue = (r.json.issue as { diagnostics: string; expression?: string[] }[])[0];
    assert.equal(
      issue?.diagnostics,
      'entry[2]: Endpoint.connectionType: Missing required property; Endpoint.payloadType: Missing required property',
    );
    assert.deepEqual(issue?.expression, [
      'Bundle.entry[2].resource.connectionType',
      'Bundle.entry[2].resource.payloadType',
    ]);
    assert.equal(await count('Endpoint'), before);
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

  test('a GET that fails after the writes committed answers in its entry; a malformed search fails before any write', async () => {
    const before = await count('Patient');
    /** A transaction that creates a Patient and then GETs `url`. */
    const createThenGet = (n: number, url: string) =>
      fhir(
        p,
        tcu,
        'POST',
        '/tx',
        bundle('transaction', [
          post(`urn:uuid:4a0b2d6e-1c1e-4a8a-9a3b-0d5f0c9b7a0${n}`, {
            resourceType: 'Patient',
            name: [{ family: 'Kept' }],
          }),
          { request: { method: 'GET', url } },
        ]),
      );
    const r = await createThenGet(1, 'Patient/never-there');
    // The Patient is committed: a whole-Bundle 404 would make a client send it again and create it twice.
    assert.equal(r.status, 200, r.text);
    const b = r.json as unknown as Resp;
    assert.deepEqual(
      b.entry.map((e) => e.response.status),
      ['201 Created', '404 Not Found'],
    );
    assert.equal(b.entry[1]?.response.outcome?.issue[0]?.code, 'not-found');
    assert.equal(await count('Patient'), before + 1);

    const malformed = await createThenGet(2, 'Observation?date=not-a-date');
    assert.equal(malformed.status, 400, malformed.text);
    assert.equal(await count('Patient'), before + 1, 'nothing of it was written');
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

  test('PATCH entries: a Binary JSON Patch, run with the PUTs after the POSTs, urn:uuid references resolved (J47)', async () => {
    await fhir(p, tcu, 'PUT', '/tx/Patient/patched', { resourceType: 'Patient', id: 'patched', gender: 'male' });
    await fhir(p, tcu, 'PUT', '/tx/Observation/obs-patched', {
      resourceType: 'Observation',
      id: 'obs-patched',
      status: 'preliminary',
      code: { text: 'bp' },
    });
    const r = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('transaction', [
        { request: { method: 'GET', url: 'Patient/patched' } },
        patchEntry('Observation/obs-patched', [
          { op: 'replace', path: '/status', value: 'final' },
          { op: 'add', path: '/subject', value: { reference: 'urn:uuid:5d0c1a3e-8a8f-4a44-9d8e-0c8b5b1f7c11' } },
          { op: 'add', path: '/performer', value: [{ reference: 'Patient/patched' }] },
          { op: 'replace', path: '/performer/0/reference', value: 'urn:uuid:5d0c1a3e-8a8f-4a44-9d8e-0c8b5b1f7c11' },
        ]),
        post('urn:uuid:5d0c1a3e-8a8f-4a44-9d8e-0c8b5b1f7c11', { resourceType: 'Patient', name: [{ family: 'New' }] }),
        patchEntry('Patient/patched', [{ op: 'replace', path: '/gender', value: 'female' }], { ifMatch: 'W/"1"' }),
      ]),
    );
    assert.equal(r.status, 200, r.text);
    const b = r.json as unknown as Resp;
    assert.deepEqual(
      b.entry.map((e) => e.response.status),
      ['200 OK', '200 OK', '201 Created', '200 OK'],
    );
    assert.equal(b.entry[0]?.resource?.gender, 'female', 'the GET sees the PATCH of the same transaction');
    assert.equal(b.entry[1]?.response.etag, 'W/"2"');
    const created = String(b.entry[2]?.response.location).replace(/\/_history\/1$/, '');
    const obs = (await fhir(p, tcu, 'GET', '/tx/Observation/obs-patched')).json;
    assert.equal(obs.status, 'final');
    assert.equal((obs.subject as { reference: string }).reference, created);
    assert.deepEqual(obs.performer, [{ reference: created }]);
    assert.equal((obs.meta as { versionId: string }).versionId, '2');
    // The same Patch in a batch, with return=representation: the patched resource comes back in its entry.
    const again = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('batch', [patchEntry('Patient/patched', [{ op: 'replace', path: '/gender', value: 'other' }])]),
      { prefer: 'return=representation' },
    );
    const entry = (again.json as unknown as Resp).entry[0];
    assert.equal(entry?.response.status, '200 OK');
    assert.equal(entry?.resource?.gender, 'other');
    assert.equal(entry?.response.etag, 'W/"3"');
  });

  test('a PATCH entry that cannot apply fails the whole transaction; nothing is stored', async () => {
    await fhir(p, tcu, 'PUT', '/tx/Patient/unpatched', { resourceType: 'Patient', id: 'unpatched', gender: 'male' });
    await fhir(p, tcu, 'PUT', '/elsewhere/Patient/other-vault', { resourceType: 'Patient', id: 'other-vault' });
    const before = await count('Patient');
    const cases: [unknown, number, RegExp][] = [
      [patchEntry('Patient/nobody', [{ op: 'replace', path: '/gender', value: 'female' }]), 404, /not found/],
      [patchEntry('Patient/other-vault', [{ op: 'remove', path: '/id' }]), 404, /not found/],
      [
        patchEntry('Patient/unpatched', [{ op: 'replace', path: '/gender', value: 'x' }], { ifMatch: 'W/"9"' }),
        412,
        /If-Match/,
      ],
      [patchEntry('Patient/unpatched', [{ op: 'test', path: '/gender', value: 'female' }]), 422, /test operation/],
      [patchEntry('Patient/unpatched', [{ op: 'replace', path: '/gender', value: 42 }]), 422, /expected string/],
      [patchEntry('Patient/unpatched', [{ op: 'replace', path: '/id', value: 'moved' }]), 422, /id/],
      [patchEntry('Patient/unpatched', [{ op: 'jump', path: '/gender' }]), 400, /invalid JSON Patch/],
      [
        patchEntry('Patient?identifier=urn:none|0', [{ op: 'add', path: '/active', value: true }]),
        404,
        /no Patient matches/,
      ],
    ];
    for (const [entry, status, message] of cases) {
      const r = await fhir(
        p,
        tcu,
        'POST',
        '/tx',
        bundle('transaction', [
          post('urn:uuid:never', { resourceType: 'Patient', name: [{ family: 'Never' }] }),
          entry,
        ]),
      );
      assert.equal(r.status, status, `${JSON.stringify(entry)} → ${r.text}`);
      const diagnostics = (r.json as { issue: { diagnostics: string }[] }).issue[0]?.diagnostics;
      assert.match(diagnostics ?? '', message);
    }
    assert.equal(await count('Patient'), before, 'the POST beside a failed PATCH was not stored');
    const kept = (await fhir(p, tcu, 'GET', '/tx/Patient/unpatched')).json;
    assert.equal(kept.gender, 'male');
    assert.equal((kept.meta as { versionId: string }).versionId, '1');
    assert.equal((await fhir(p, tcu, 'GET', '/elsewhere/Patient/other-vault')).json.id, 'other-vault');
  });

  test('a conditional PATCH entry patches its one match; two entries on one resource fail (J46)', async () => {
    await fhir(p, tcu, 'POST', '/tx/Patient', {
      resourceType: 'Patient',
      identifier: [{ system: 'urn:txpatch', value: '1' }],
    });
    const r = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('transaction', [
        patchEntry('Patient?identifier=urn:txpatch|1', [{ op: 'add', path: '/active', value: true }]),
      ]),
    );
    assert.equal(r.status, 200, r.text);
    const found = (await fhir(p, tcu, 'GET', '/tx/Patient?identifier=urn:txpatch|1')).json as {
      entry: { resource: { active?: boolean } }[];
    };
    assert.equal(found.entry.length, 1);
    assert.equal(found.entry[0]?.resource.active, true);
    const twice = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('transaction', [
        patchEntry('Patient/unpatched-twice', [{ op: 'add', path: '/active', value: true }]),
        {
          resource: { resourceType: 'Patient', id: 'unpatched-twice' },
          request: { method: 'PUT', url: 'Patient/unpatched-twice' },
        },
      ]),
    );
    assert.equal(twice.status, 400, twice.text);
    assert.match(twice.text, /more than one entry/);
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

  test('PATCH entries in a batch succeed or fail on their own', async () => {
    await fhir(p, tcu, 'PUT', '/tx/Patient/batch-patched', { resourceType: 'Patient', id: 'batch-patched' });
    const r = await fhir(
      p,
      tcu,
      'POST',
      '/tx',
      bundle('batch', [
        patchEntry('Patient/batch-patched', [{ op: 'add', path: '/gender', value: 'female' }]),
        patchEntry('Patient/batch-nobody', [{ op: 'add', path: '/gender', value: 'female' }]),
        patchEntry('Patient/batch-patched', [{ op: 'test', path: '/gender', value: 'male' }]),
        {
          resource: {
            resourceType: 'Parameters',
            parameter: [{ name: 'operation', part: [{ name: 'type', valueCode: 'explode' }] }],
          },
          request: { method: 'PATCH', url: 'Patient/batch-patched' },
        },
      ]),
    );
    assert.equal(r.status, 200, r.text);
    const b = r.json as unknown as Resp;
    assert.deepEqual(
      b.entry.map((e) => e.response.status),
      ['200 OK', '404 Not Found', '422 Unprocessable Entity', '400 Bad Request'],
    );
    assert.equal((await fhir(p, tcu, 'GET', '/tx/Patient/batch-patched')).json.gender, 'female');
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
      bundle('transaction', [{ request: { method: 'PATCH', url: 'Patient/1' } }]),
      bundle('transaction', [
        { resource: { resourceType: 'Observation' }, request: { method: 'PATCH', url: 'Patient/1' } },
      ]),
      bundle('transaction', [{ ...patchEntry('Patient/1', []), request: { method: 'PATCH', url: 'Patient' } }]),
      bundle('transaction', [
        { ...patchEntry('Patient/1', []), request: { method: 'PATCH', url: 'Patient/1/_history/1' } },
      ]),
      bundle('transaction', [
        {
          resource: { resourceType: 'Binary', contentType: 'application/json', data: 'W10=' },
          request: { method: 'PATCH', url: 'Patient/1' },
        },
      ]),
      bundle('transaction', [
        {
          resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: 'not base64!' },
          request: { method: 'PATCH', url: 'Patient/1' },
        },
      ]),
      bundle('transaction', [
        {
          resource: {
            resourceType: 'Binary',
            contentType: 'application/json-patch+json',
            data: Buffer.from('{"op":"add"}').toString('base64'),
          },
          request: { method: 'PATCH', url: 'Patient/1' },
        },
      ]),
      bundle('transaction', [
        {
          resource: {
            resourceType: 'Binary',
            contentType: 'application/json-patch+json',
            data: Buffer.from('[{').toString('base64'),
          },
          request: { method: 'PATCH', url: 'Patient/1' },
        },
      ]),
    ];
    for (const body of cases) {
      const r = await fhir(p, tcu, 'POST', '/tx', body);
      assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.text}`);
      assert.equal(r.json.resourceType, 'OperationOutcome');
    }
  });
});
