import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeJwt, importJWK, SignJWT } from 'jose';
import { openStore } from '../src/store/index.ts';
import { addGrant } from '../src/vault/grants.ts';
import { account, type Caller, fhir, grant, mtlsClient, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// FHIR R4 REST on a vault, enforced by the token (ITI-72) and the vault's grants.
let p: TestPlatform;
let tcu: Caller; // seed 000's technical user: mTLS, certificate-bound token, granted on alice_1234
let reader: Caller; // granted read-only through its organization
let stranger: Caller; // valid token, no grant anywhere

const OBS = (id?: string) => ({
  resourceType: 'Observation',
  ...(id ? { id } : {}),
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
  valueQuantity: { value: 72, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
});

before(async () => {
  p = await startPlatform();
  await account(p, 'urn:cara:account:alice_1234');
  await partition(p, 'bob_5678');
  tcu = await mtlsClient(p, 'bestclinic-tcu', 'system/*.cruds');
  await grant(p, {
    partition: 'alice_1234',
    client: 'bestclinic-tcu',
    scope: 'system/Observation.cruds system/Patient.cruds',
  });
  await grant(p, { partition: 'bob_5678', client: 'bestclinic-tcu', scope: 'system/Observation.rs' });
  reader = await secretClient(p, 'viewer', 'system/*.rs', { orgOid: '2.16.528.1.1007.3.3.1234' });
  await grant(p, { partition: 'alice_1234', orgOid: '2.16.528.1.1007.3.3.1234', scope: 'system/*.rs' });
  stranger = await secretClient(p, 'stranger', 'system/*.cruds');
});
after(() => p.stop());

describe('CARA flow: PUT-by-UUID of Observations (seed 000)', () => {
  test('the first PUT creates (201), the same PUT again updates to version 2 with the same id', async () => {
    const id = crypto.randomUUID();
    const first = await fhir(p, tcu, 'PUT', `/alice_1234/Observation/${id}`, OBS(id));
    assert.equal(first.status, 201, first.text);
    assert.equal(first.headers.get('location'), `${p.fhirBase}/alice_1234/Observation/${id}/_history/1`);
    assert.equal(first.headers.get('etag'), 'W/"1"');
    const second = await fhir(p, tcu, 'PUT', `/alice_1234/Observation/${id}`, OBS(id));
    assert.equal(second.status, 200);
    assert.equal(second.headers.get('etag'), 'W/"2"');
    const read = await fhir(p, reader, 'GET', `/alice_1234/Observation/${id}`);
    assert.equal(read.status, 200);
    assert.equal(read.json.id, id);
    assert.deepEqual((read.json.meta as Record<string, string>).versionId, '2');
    assert.deepEqual(read.json.valueQuantity, OBS().valueQuantity);
  });
});

describe('REST interactions (J rows)', () => {
  test('create: 201, server-assigned id, Location, ETag, Last-Modified; client id and meta ignored (J12)', async () => {
    const r = await fhir(p, tcu, 'POST', '/alice_1234/Patient', {
      resourceType: 'Patient',
      id: 'mine',
      meta: {
        versionId: '99',
        lastUpdated: '2000-01-01T00:00:00Z',
        tag: [{ system: 'https://terminology.cara.ch/CodeSystem/fhirvault-namespace', code: 'cara:scp' }],
      },
      name: [{ family: 'Muster' }],
    });
    assert.equal(r.status, 201, r.text);
    assert.notEqual(r.json.id, 'mine');
    const meta = r.json.meta as { versionId: string; lastUpdated: string; tag: unknown[] };
    assert.equal(meta.versionId, '1');
    assert.notEqual(meta.lastUpdated, '2000-01-01T00:00:00Z');
    assert.equal(meta.tag.length, 1, 'other meta is kept');
    assert.equal(r.headers.get('location'), `${p.fhirBase}/alice_1234/Patient/${r.json.id}/_history/1`);
    assert.ok(r.headers.get('last-modified'));
    assert.match(r.headers.get('content-type') ?? '', /^application\/fhir\+json; ?charset=utf-8$/);
  });

  test('server-assigned ids are version-7 UUIDs: distinct, in creation order by their time (create and Bundle)', async () => {
    const UUID7 = /^([0-9a-f]{8})-([0-9a-f]{4})-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    const millis = (id: string) => {
      const m = UUID7.exec(id);
      if (!m) assert.fail(`${id} is not a version-7 UUID`);
      return Number.parseInt(`${m[1]}${m[2]}`, 16);
    };
    const start = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await fhir(p, tcu, 'POST', '/alice_1234/Observation', OBS());
      assert.equal(r.status, 201, r.text);
      ids.push(r.json.id as string);
    }
    const bundle = await fhir(p, tcu, 'POST', '/alice_1234', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ resource: OBS(), request: { method: 'POST', url: 'Observation' } }],
    });
    assert.equal(bundle.status, 200, bundle.text);
    const entry = (bundle.json.entry as { response: { location: string } }[])[0];
    ids.push(entry?.response.location.split('/')[1] ?? '');
    const times = ids.map(millis);
    assert.equal(new Set(ids).size, ids.length);
    assert.deepEqual(
      [...times].sort((a, b) => a - b),
      times,
      'later resources carry later times',
    );
    assert.ok((times[0] as number) >= start && (times[3] as number) <= Date.now(), `${times} within the test`);
  });

  test('read (J08), unknown id (J09), vread (J11), HEAD (J51)', async () => {
    const created = await fhir(p, tcu, 'POST', '/alice_1234/Observation', OBS());
    const id = created.json.id as string;
    const read = await fhir(p, tcu, 'GET', `/alice_1234/Observation/${id}`);
    assert.equal(read.text, created.text, 'the stored JSON is served as-is');
    assert.equal(read.headers.get('etag'), 'W/"1"');
    const head = await fhir(p, tcu, 'HEAD', `/alice_1234/Observation/${id}`);
    assert.equal(head.status, 200);
    assert.equal(head.text, '');
    assert.equal(head.headers.get('etag'), 'W/"1"');
    const v1 = await fhir(p, tcu, 'GET', `/alice_1234/Observation/${id}/_history/1`);
    assert.equal(v1.status, 200);
    assert.equal((await fhir(p, tcu, 'GET', `/alice_1234/Observation/${id}/_history/2`)).status, 404);
    assert.equal((await fhir(p, tcu, 'GET', `/alice_1234/Observation/${id}/_history/x`)).status, 404);
    const missing = await fhir(p, tcu, 'GET', '/alice_1234/Observation/does-not-exist');
    assert.equal(missing.status, 404);
    assert.equal(missing.json.resourceType, 'OperationOutcome');
    assert.equal((missing.json.issue as { code: string }[])[0]?.code, 'not-found');
  });

  test('conditional read and vread: If-None-Match and If-Modified-Since of the version held are 304, audited', async () => {
    const created = await fhir(p, tcu, 'POST', '/alice_1234/Observation', OBS());
    const path = `/alice_1234/Observation/${created.json.id as string}`;
    const lastModified = created.headers.get('last-modified') as string;
    const read = (headers: Record<string, string>) => fhir(p, tcu, 'GET', path, undefined, headers);
    for (const tag of ['W/"1"', '"1"', 'W/"0", W/"1"', '*']) {
      const r = await read({ 'if-none-match': tag });
      assert.equal(r.status, 304, `${tag}: ${r.text}`);
      assert.equal(r.text, '');
      assert.equal(r.headers.get('etag'), 'W/"1"');
      assert.equal(r.headers.get('last-modified'), lastModified);
    }
    assert.equal((await read({ 'if-modified-since': lastModified })).status, 304);
    const hourBefore = new Date(Date.parse(lastModified) - 3_600_000).toUTCString();
    for (const headers of <Record<string, string>[]>[
      { 'if-none-match': 'W/"2"' },
      { 'if-modified-since': hourBefore },
      { 'if-modified-since': 'yesterday-ish' },
      // If-None-Match decides when both are sent.
      { 'if-none-match': 'W/"2"', 'if-modified-since': lastModified },
    ]) {
      const r = await read(headers);
      assert.equal(r.status, 200, JSON.stringify(headers));
      assert.equal(r.text, created.text);
    }
    const vread = await fhir(p, tcu, 'GET', `${path}/_history/1`, undefined, { 'if-none-match': 'W/"1"' });
    assert.equal(vread.status, 304);
    const xml = await fhir(p, tcu, 'GET', `${path}?_format=xml`, undefined, { 'if-none-match': 'W/"1"' });
    assert.equal(xml.status, 304);
    assert.equal(xml.text, '');

    // A 304 is a read: its AuditEvent is written.
    const auditor = await secretClient(p, 'rest-auditor', 'system/AuditEvent.rs');
    const requestId = `cread-${Date.now()}`;
    assert.equal((await read({ 'if-none-match': 'W/"1"', 'x-request-id': requestId })).status, 304);
    const audit = await p.fetch(`${p.base}/audit/AuditEvent?request-id=${requestId}`, {
      dispatcher: p.agent(),
      headers: { authorization: `Bearer ${auditor.token}` },
    });
    const events = ((await audit.json()) as { entry?: { resource: { subtype: { code: string }[] } }[] }).entry ?? [];
    assert.deepEqual(
      events.map((e) => e.resource.subtype[0]?.code),
      ['read'],
    );

    // A newer version is served whole; another vault and a deleted resource answer as a plain read would.
    const body = { ...OBS(created.json.id as string), status: 'amended' };
    assert.equal((await fhir(p, tcu, 'PUT', path, body)).status, 200);
    const changed = await read({ 'if-none-match': 'W/"1"' });
    assert.equal(changed.status, 200);
    assert.equal(changed.headers.get('etag'), 'W/"2"');
    assert.equal(changed.json.status, 'amended');
    // A version never changes: its own ETag is 304 still, the current one's is not.
    assert.equal(
      (await fhir(p, tcu, 'GET', `${path}/_history/1`, undefined, { 'if-none-match': 'W/"1"' })).status,
      304,
    );
    const v1 = await fhir(p, tcu, 'GET', `${path}/_history/1`, undefined, { 'if-none-match': 'W/"2"' });
    assert.equal(v1.status, 200);
    assert.equal(v1.json.status, 'final');
    const elsewhere = await fhir(p, tcu, 'GET', path.replace('alice_1234', 'bob_5678'), undefined, {
      'if-none-match': '*',
    });
    assert.equal(elsewhere.status, 404);
    assert.equal((await fhir(p, tcu, 'DELETE', path)).status, 204);
    assert.equal((await read({ 'if-none-match': '*' })).status, 410);
  });

  test('update: If-Match stale → 412, current → 200 (J19); id rules (J17)', async () => {
    const id = (await fhir(p, tcu, 'POST', '/alice_1234/Observation', OBS())).json.id as string;
    const stale = await fhir(p, tcu, 'PUT', `/alice_1234/Observation/${id}`, OBS(id), { 'if-match': 'W/"7"' });
    assert.equal(stale.status, 412);
    const ok = await fhir(
      p,
      tcu,
      'PUT',
      `/alice_1234/Observation/${id}`,
      { ...OBS(id), status: 'amended' },
      { 'if-match': 'W/"1"' },
    );
    assert.equal(ok.status, 200);
    assert.equal(ok.json.status, 'amended');
    assert.equal((await fhir(p, tcu, 'PUT', `/alice_1234/Observation/${id}`, OBS())).status, 400, 'no id in body');
    assert.equal((await fhir(p, tcu, 'PUT', `/alice_1234/Observation/${id}`, OBS('other'))).status, 400, 'id mismatch');
    assert.equal(
      (await fhir(p, tcu, 'PUT', `/alice_1234/Observation/${id}`, OBS(id), { 'if-match': 'garbage' })).status,
      400,
    );
  });

  test('delete with If-Match: a stale or deleted version is 412 and deletes nothing; the current one deletes', async () => {
    const id = (await fhir(p, tcu, 'POST', '/alice_1234/Observation', OBS())).json.id as string;
    const path = `/alice_1234/Observation/${id}`;
    assert.equal((await fhir(p, tcu, 'PUT', path, { ...OBS(id), status: 'amended' })).status, 200);
    const stale = await fhir(p, tcu, 'DELETE', path, undefined, { 'if-match': 'W/"1"' });
    assert.equal(stale.status, 412, stale.text);
    const [issue] = stale.json.issue as { code: string; diagnostics: string }[];
    assert.equal(issue?.code, 'conflict');
    assert.match(issue?.diagnostics ?? '', /If-Match W\/"1" does not match the current version/);
    assert.equal((await fhir(p, tcu, 'GET', path)).status, 200, 'still there');
    assert.equal((await fhir(p, tcu, 'DELETE', path, undefined, { 'if-match': 'garbage' })).status, 400);
    // In a transaction, the stale entry fails the whole Bundle: the write beside it is not kept either.
    const tx = await fhir(p, tcu, 'POST', '/alice_1234', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'DELETE', url: `Observation/${id}`, ifMatch: 'W/"1"' } },
        { resource: OBS(`${id}-beside`), request: { method: 'PUT', url: `Observation/${id}-beside` } },
      ],
    });
    assert.equal(tx.status, 412, tx.text);
    assert.equal((await fhir(p, tcu, 'GET', path)).status, 200, 'still there after the transaction');
    assert.equal((await fhir(p, tcu, 'GET', `${path}-beside`)).status, 404, 'the write beside it is not kept');
    assert.equal((await fhir(p, tcu, 'DELETE', path, undefined, { 'if-match': 'W/"2"' })).status, 204);
    assert.equal((await fhir(p, tcu, 'GET', path)).status, 410);
    // A deleted resource has no current version to match; without If-Match deleting it again is still 204.
    assert.equal((await fhir(p, tcu, 'DELETE', path, undefined, { 'if-match': 'W/"3"' })).status, 412);
    assert.equal((await fhir(p, tcu, 'DELETE', path)).status, 204);
  });

  test('delete → 204, read → 410, delete again → 204, history keeps versions (J10 J22 J24)', async () => {
    const id = (await fhir(p, tcu, 'POST', '/alice_1234/Observation', OBS())).json.id as string;
    await fhir(p, tcu, 'PUT', `/alice_1234/Observation/${id}`, OBS(id));
    assert.equal((await fhir(p, tcu, 'DELETE', `/alice_1234/Observation/${id}`)).status, 204);
    const gone = await fhir(p, tcu, 'GET', `/alice_1234/Observation/${id}`);
    assert.equal(gone.status, 410);
    assert.equal((gone.json.issue as { code: string }[])[0]?.code, 'deleted');
    assert.equal((await fhir(p, tcu, 'DELETE', `/alice_1234/Observation/${id}`)).status, 204);
    assert.equal((await fhir(p, tcu, 'DELETE', '/alice_1234/Observation/never-was')).status, 404);
    assert.equal((await fhir(p, tcu, 'GET', `/alice_1234/Observation/${id}/_history/3`)).status, 410);
    const h = await fhir(p, tcu, 'GET', `/alice_1234/Observation/${id}/_history`);
    assert.equal(h.json.type, 'history');
    const entries = h.json.entry as { resource?: { meta: { versionId: string } }; request: { method: string } }[];
    assert.deepEqual(
      entries.map((e) => e.request.method),
      ['DELETE', 'PUT', 'POST'],
    );
    assert.equal(entries[0]?.resource, undefined);
    assert.equal(entries[1]?.resource?.meta.versionId, '2');
  });

  test('history paging: _count and next links walk back without gaps or repeats (J25)', async () => {
    await partition(p, 'paging');
    await grant(p, { partition: 'paging', client: 'bestclinic-tcu', scope: 'system/*.cruds' });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await fhir(p, tcu, 'POST', '/paging/Observation', OBS())).json.id as string);
    const seen: string[] = [];
    let url: string | undefined = '/paging/_history?_count=2';
    while (url) {
      const page = await fhir(p, tcu, 'GET', url);
      assert.equal(page.status, 200, page.text);
      const entries = (page.json.entry as { resource: { id: string } }[]) ?? [];
      assert.ok(entries.length <= 2);
      seen.push(...entries.map((e) => e.resource.id));
      const next = (page.json.link as { relation: string; url: string }[]).find((l) => l.relation === 'next');
      url = next ? next.url.slice(p.fhirBase.length) : undefined;
    }
    assert.deepEqual(seen, [...ids].reverse());
    const since = await fhir(
      p,
      tcu,
      'GET',
      `/paging/Observation/_history?_since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`,
    );
    assert.equal(since.json.entry, undefined, 'an empty history has no entry array');
    assert.equal((await fhir(p, tcu, 'GET', '/paging/_history?_since=yesterday')).status, 400);
    assert.equal((await fhir(p, tcu, 'GET', '/paging/_history?_cursor=Zm9v')).status, 400);
  });

  test('history _at: the versions current at some point of a period, AND-ed, kept in the next link', async () => {
    await partition(p, 'at_vault');
    await grant(p, { partition: 'at_vault', client: 'bestclinic-tcu', scope: 'system/*.cruds' });
    const id = (await fhir(p, tcu, 'POST', '/at_vault/Observation', OBS())).json.id as string;
    await sleep(40);
    await fhir(p, tcu, 'PUT', `/at_vault/Observation/${id}`, OBS(id));
    await sleep(40);
    await fhir(p, tcu, 'DELETE', `/at_vault/Observation/${id}`);
    await sleep(40);
    // Another resource, written after the delete: only a period reaching past it finds it.
    const later = (await fhir(p, tcu, 'POST', '/at_vault/Observation', OBS())).json.id as string;
    const all = (await fhir(p, tcu, 'GET', '/at_vault/_history')).json.entry as {
      response: { lastModified: string; etag: string };
      fullUrl: string;
    }[];
    const time = (version: number) =>
      Date.parse(
        all.find((e) => e.fullUrl.endsWith(id) && e.response.etag === `W/"${version}"`)?.response.lastModified ?? '',
      );
    const [t1, t2, t3] = [time(1), time(2), time(3)];
    const mid = (a: number, b: number) => new Date(Math.floor((a + b) / 2)).toISOString();
    const at = async (query: string, path = '/at_vault/_history') => {
      const r = await fhir(p, tcu, 'GET', `${path}?${query}`);
      assert.equal(r.status, 200, `${query}: ${r.text}`);
      return ((r.json.entry ?? []) as { fullUrl: string; response: { etag: string } }[]).map(
        (e) => `${e.fullUrl.endsWith(later) ? 'later' : 'obs'}@${e.response.etag.slice(3, -1)}`,
      );
    };
    const enc = encodeURIComponent;
    assert.deepEqual(await at(`_at=${enc(new Date(t1).toISOString())}`), ['obs@1'], 'the instant it was written');
    assert.deepEqual(await at(`_at=${enc(mid(t1, t2))}`), ['obs@1']);
    assert.deepEqual(await at(`_at=${enc(mid(t2, t3))}`), ['obs@2']);
    assert.deepEqual(await at(`_at=ge${enc(mid(t1, t2))}`), ['later@1', 'obs@3', 'obs@2', 'obs@1']);
    assert.deepEqual(await at(`_at=gt${enc(mid(t2, t3))}`), ['later@1', 'obs@3', 'obs@2']);
    assert.deepEqual(await at(`_at=lt${enc(mid(t1, t2))}`), ['obs@1']);
    assert.deepEqual(await at(`_at=le${enc(mid(t2, t3))}`), ['obs@2', 'obs@1']);
    assert.deepEqual(await at(`_at=ge${enc(mid(t1, t2))}&_at=lt${enc(mid(t2, t3))}`), ['obs@2', 'obs@1']);
    // The delete is a version too: from then on the resource was deleted.
    assert.deepEqual(await at(`_at=${enc(mid(t2, t3))}&_at=gt${enc(mid(t2, t3))}`), ['obs@2']);
    assert.deepEqual(await at('_at=2000'), []);
    assert.deepEqual(await at(`_at=ge${enc(mid(t1, t2))}`, `/at_vault/Observation/${id}/_history`), [
      'obs@3',
      'obs@2',
      'obs@1',
    ]);
    assert.deepEqual(await at(`_at=${enc(mid(t1, t2))}`, '/at_vault/Observation/_history'), ['obs@1']);
    // Paging keeps the period.
    const first = await fhir(p, tcu, 'GET', `/at_vault/_history?_at=ge${enc(mid(t1, t2))}&_count=3`);
    const next = (first.json.link as { relation: string; url: string }[]).find((l) => l.relation === 'next');
    assert.ok(next?.url.includes('_at=ge'), next?.url);
    const rest = (await fhir(p, tcu, 'GET', (next?.url ?? '').slice(p.fhirBase.length))).json.entry as unknown[];
    assert.equal(rest.length, 1);
    // Another vault's versions are never current "at" anything here.
    assert.deepEqual(await at('_at=ge2000', '/bob_5678/Observation/_history'), []);
    for (const bad of ['_at=sa2020', '_at=2020,2021', '_at=yesterday', '_list=abc']) {
      const r = await fhir(p, tcu, 'GET', `/at_vault/_history?${bad}`);
      assert.equal(r.status, 400, bad);
      assert.match(String((r.json.issue as { diagnostics: string }[])[0]?.diagnostics), /_at|_list/);
    }
    assert.equal((await fhir(p, tcu, 'GET', '/at_vault/_history?_fooo=1')).status, 200);
    const strict = await fhir(p, tcu, 'GET', '/at_vault/_history?_fooo=1', undefined, { prefer: 'handling=strict' });
    assert.equal(strict.status, 400);
  });

  test('Prefer: return=minimal / OperationOutcome (J48)', async () => {
    const minimal = await fhir(p, tcu, 'POST', '/alice_1234/Observation', OBS(), { prefer: 'return=minimal' });
    assert.equal(minimal.status, 201);
    assert.equal(minimal.text, '');
    assert.ok(minimal.headers.get('location'));
    const oo = await fhir(p, tcu, 'POST', '/alice_1234/Observation', OBS(), { prefer: 'return=OperationOutcome' });
    assert.equal(oo.json.resourceType, 'OperationOutcome');
  });

  test('content negotiation: JSON or XML, 406 for anything else (J03–J07)', async () => {
    const id = (await fhir(p, tcu, 'POST', '/alice_1234/Observation', OBS())).json.id as string;
    const get = (query: string, accept?: string) =>
      fhir(p, tcu, 'GET', `/alice_1234/Observation/${id}${query}`, undefined, accept === undefined ? {} : { accept });
    const typeOf = (r: { headers: Headers }) => r.headers.get('content-type')?.split(';')[0];
    assert.equal(typeOf(await get('', 'application/json')), 'application/fhir+json');
    assert.equal(typeOf(await get('')), 'application/fhir+json', 'no Accept: JSON');
    assert.equal(typeOf(await get('', '*/*')), 'application/fhir+json');
    const xml = await get('', 'application/fhir+xml');
    assert.equal(xml.status, 200);
    assert.equal(typeOf(xml), 'application/fhir+xml');
    assert.match(
      xml.text,
      new RegExp(`^(<\\?xml[^>]*\\?>)?<Observation xmlns="http://hl7.org/fhir"><id value="${id}"/>`),
    );
    assert.equal(typeOf(await get('', 'application/fhir+xml;q=0.5, application/fhir+json')), 'application/fhir+json');
    assert.equal(typeOf(await get('', 'text/html, application/xml;q=0.9')), 'application/fhir+xml');
    assert.equal(typeOf(await get('?_format=json', 'text/html')), 'application/fhir+json', '_format overrides Accept');
    assert.equal(typeOf(await get('?_format=xml')), 'application/fhir+xml');
    const refused = await get('', 'text/html');
    assert.equal(refused.status, 406);
    assert.equal(refused.json.resourceType, 'OperationOutcome');
    assert.match(refused.text, /application\/fhir\+json or application\/fhir\+xml/);
    assert.equal((await get('?_format=turtle')).status, 406);
    // Errors come in the negotiated format too.
    const missing = await fhir(p, tcu, 'GET', '/alice_1234/Observation/nope', undefined, {
      accept: 'application/fhir+xml',
    });
    assert.equal(missing.status, 404);
    assert.match(missing.text, /^(<\?xml[^>]*\?>)?<OperationOutcome xmlns="http:\/\/hl7.org\/fhir">/);
    const post = await fhir(p, tcu, 'POST', '/alice_1234/Observation', 'x,y', { 'content-type': 'text/csv' });
    assert.equal(post.status, 415);
    assert.equal(post.json.resourceType, 'OperationOutcome');
  });

  test('bad bodies get 4xx OperationOutcomes, never a 500 or a stack trace (J13)', async () => {
    const cases: [unknown, number][] = [
      ['{"resourceType":', 400],
      ['[1,2]', 400],
      ['"just a string"', 400],
      [{ resourceType: 'Patient' }, 400],
      [{ resourceType: 'Observation', id: 'has space' }, 400],
      [{ resourceType: 'Observation', meta: 'x' }, 400],
      ['{"resourceType":"Observation","__proto__":{"polluted":true}}', 400],
      [`${'['.repeat(100_000)}${']'.repeat(100_000)}`, 400],
    ];
    for (const [body, status] of cases) {
      const r = await fhir(p, tcu, 'POST', '/alice_1234/Observation', body);
      assert.equal(r.status, status, `${String(body).slice(0, 40)} → ${r.text}`);
      assert.equal(r.json.resourceType, 'OperationOutcome');
      assert.ok(!/\n\s+at |SQLITE|sqlite/i.test(r.text), r.text);
    }
    const huge = await fhir(
      p,
      tcu,
      'POST',
      '/alice_1234/Observation',
      `{"resourceType":"Observation","note":[{"text":"${'x'.repeat(20 * 1024 * 1024)}"}]}`,
    );
    assert.equal(huge.status, 413);
    assert.equal(huge.json.resourceType, 'OperationOutcome');
    assert.equal((await fhir(p, tcu, 'GET', '/alice_1234/NotAType/1')).status, 404);
    assert.equal((await fhir(p, tcu, 'GET', `/alice_1234/Observation/${'a'.repeat(65)}`)).status, 400);
    const injection = await fhir(p, tcu, 'GET', `/alice_1234/Observation/${encodeURIComponent("1' OR '1'='1")}`);
    assert.equal(injection.status, 400);
  });

  test('invalid resources are 422 with the path of the problem (structural validation against R4)', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ resourceType: 'Observation', code: { text: 'x' } }, 'Observation.status'],
      [{ resourceType: 'Observation', status: 'finalized', code: { text: 'x' } }, 'Observation.status'],
      [{ resourceType: 'Observation', status: 'final', code: { text: 'x' }, bogus: 1 }, 'Observation.bogus'],
      [{ resourceType: 'Observation', status: 'final', code: { coding: { system: 'x' } } }, 'Observation.code.coding'],
      [
        { resourceType: 'Observation', status: 'final', code: { text: 'x' }, effectiveDateTime: '2024-13-45' },
        'Observation.effective',
      ],
      [{ resourceType: 'Patient', active: 'yes' }, 'Patient.active'],
    ];
    for (const [body, path] of cases) {
      const r = await fhir(
        p,
        tcu,
        'POST',
        '/alice_1234/Observation'.replace('Observation', body.resourceType as string),
        body,
      );
      assert.equal(r.status, 422, `${JSON.stringify(body)} → ${r.text}`);
      const issue = (r.json.issue as { expression?: string[] }[])[0];
      assert.ok(
        issue?.expression?.some((e) => e.startsWith(path)),
        `${path} in ${r.text}`,
      );
    }
    const id = crypto.randomUUID();
    const put = await fhir(p, tcu, 'PUT', `/alice_1234/Observation/${id}`, {
      resourceType: 'Observation',
      id,
      status: 'nope',
      code: { text: 'x' },
    });
    assert.equal(put.status, 422);
    assert.equal((await fhir(p, tcu, 'GET', `/alice_1234/Observation/${id}`)).status, 404, 'nothing stored');
  });

  test('metadata: a CapabilityStatement that states what is supported (J01 A20 A21)', async () => {
    const r = await fhir(p, undefined, 'GET', '/alice_1234/metadata');
    assert.equal(r.status, 200);
    const cs = r.json as unknown as {
      fhirVersion: string;
      kind: string;
      format: string[];
      rest: {
        mode: string;
        resource: { type: string; updateCreate: boolean; interaction: { code: string }[]; searchParam?: unknown }[];
        security: {
          service: { coding: { code: string }[] }[];
          extension: { url: string; extension: { url: string; valueUri: string }[] }[];
        };
      }[];
    };
    assert.equal(cs.fhirVersion, '4.0.1');
    assert.equal(cs.kind, 'instance');
    assert.ok(cs.format.includes('json'));
    assert.ok(cs.format.includes('xml'));
    const rest = cs.rest[0];
    assert.equal(rest?.mode, 'server');
    const types = new Set(rest?.resource.map((x) => x.type));
    assert.ok(types.size > 140, `${types.size} R4 resource types`);
    for (const t of ['Patient', 'Observation', 'CarePlan', 'AuditEvent', 'Provenance', 'MeasureReport'])
      assert.ok(types.has(t), t);
    for (const t of ['Resource', 'DomainResource', 'Quantity']) assert.ok(!types.has(t), t);
    const obs = rest?.resource.find((x) => x.type === 'Observation');
    assert.equal(obs?.updateCreate, true);
    assert.ok(obs?.interaction.some((i) => i.code === 'search-type'));
    assert.ok(((obs?.searchParam ?? []) as { name: string }[]).some((sp) => sp.name === 'patient'));
    assert.ok(rest?.security.service[0]?.coding.some((c) => c.code === 'IUA'));
    const oauth = rest?.security.extension?.find((e) => e.url.endsWith('oauth-uris'));
    assert.equal(oauth?.extension.find((e) => e.url === 'token')?.valueUri, p.tokenUrl);
    assert.equal(oauth?.extension.find((e) => e.url === 'register')?.valueUri, `${p.issuer}/oauth/register`);
    assert.ok(rest?.security.service[0]?.coding.some((c) => c.code === 'SMART-on-FHIR'));
  });
});

describe('ITI-72 enforcement (I rows)', () => {
  test('no token → 401 with a bare Bearer challenge (I02)', async () => {
    const r = await fhir(p, undefined, 'GET', '/alice_1234/Observation/x');
    assert.equal(r.status, 401);
    assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="carevault"');
    assert.equal(r.json.resourceType, 'OperationOutcome');
  });

  test('bad tokens → 401 invalid_token (I03 I04 I05)', async () => {
    const jwk = p.keys.privateJwks().find((k) => k.alg === 'ES256');
    const key = await importJWK(jwk as object, 'ES256');
    const now = Math.floor(Date.now() / 1000);
    const sign = (claims: Record<string, unknown>) =>
      new SignJWT({
        iss: p.issuer,
        aud: p.fhirBase,
        client_id: 'bestclinic-tcu',
        sub: 'bestclinic-tcu',
        scope: 'system/*.cruds',
        jti: crypto.randomUUID(),
        iat: now,
        exp: now + 60,
        ...claims,
      })
        .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: jwk?.kid as string })
        .sign(key);
    const tampered = `${reader.token.split('.')[0]}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(reader.token.split('.')[1] as string, 'base64url').toString()), scope: 'system/*.cruds' })).toString('base64url')}.${reader.token.split('.')[2]}`;
    for (const token of [
      await sign({ exp: now - 10 }),
      await sign({ aud: 'https://elsewhere.example/fhir' }),
      tampered,
      'not-a-token',
    ]) {
      const r = await fhir(p, { token }, 'GET', '/alice_1234/Observation/x');
      assert.equal(r.status, 401, token.slice(0, 20));
      assert.match(r.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    }
  });

  test('query-string tokens are refused; an empty or doubled Authorization header is 400 (I06 I07)', async () => {
    const q = await fhir(p, undefined, 'GET', `/alice_1234/Observation/x?access_token=${reader.token}`);
    assert.equal(q.status, 401);
    assert.equal(
      (await fhir(p, undefined, 'GET', '/alice_1234/Observation/x', undefined, { authorization: 'Bearer ' })).status,
      400,
    );
  });

  test('missing scope → 403 insufficient_scope, with the reason (I08 X1)', async () => {
    const r = await fhir(p, reader, 'POST', '/alice_1234/Observation', OBS());
    assert.equal(r.status, 403);
    assert.match(r.headers.get('www-authenticate') ?? '', /error="insufficient_scope"/);
    assert.equal((r.json.issue as { code: string }[])[0]?.code, 'forbidden');
    // The grant, not the token, limits bob_5678 to reading.
    const w = await fhir(p, tcu, 'POST', '/bob_5678/Observation', OBS());
    assert.equal(w.status, 403);
    assert.match(w.text, /grants of this vault/);
  });

  test('another vault answers exactly like a missing one: 404, same body (I15 X11)', async () => {
    const id = (await fhir(p, tcu, 'POST', '/alice_1234/Observation', OBS())).json.id as string;
    const denied = await fhir(p, stranger, 'GET', `/alice_1234/Observation/${id}`);
    const absent = await fhir(p, stranger, 'GET', `/no_such_vault/Observation/${id}`);
    assert.equal(denied.status, 404);
    assert.equal(denied.text, absent.text);
    assert.equal((await fhir(p, stranger, 'GET', '/alice_1234/_history')).status, 404);
    assert.equal((await fhir(p, stranger, 'PUT', `/alice_1234/Observation/${id}`, OBS(id))).status, 404);
    assert.equal((await fhir(p, stranger, 'DELETE', `/alice_1234/Observation/${id}`)).status, 404);
    assert.equal((await fhir(p, tcu, 'GET', `/alice_1234/Observation/${id}`)).status, 200, 'untouched');
    // Ids are per vault: the same id in bob_5678 is a different (here: missing) resource.
    assert.equal((await fhir(p, tcu, 'GET', `/bob_5678/Observation/${id}`)).status, 404);
  });

  test('history never crosses vaults (I16)', async () => {
    const alice = (await fhir(p, reader, 'GET', '/alice_1234/_history?_count=1000')).json.entry as {
      fullUrl: string;
    }[];
    const bob = ((await fhir(p, tcu, 'GET', '/bob_5678/Observation/_history?_count=1000')).json.entry ?? []) as {
      fullUrl: string;
    }[];
    assert.ok(alice.length > 0);
    assert.ok(alice.every((e) => e.fullUrl.startsWith(`${p.fhirBase}/alice_1234/`)));
    assert.ok(bob.every((e) => e.fullUrl.startsWith(`${p.fhirBase}/bob_5678/`)));
  });

  test('a certificate-bound token needs its certificate at the FHIR endpoint (F06 F07)', async () => {
    const id = (await fhir(p, tcu, 'POST', '/alice_1234/Observation', OBS())).json.id as string;
    const withoutCert = await fhir(p, { token: tcu.token }, 'GET', `/alice_1234/Observation/${id}`);
    assert.equal(withoutCert.status, 401);
    assert.match(withoutCert.headers.get('www-authenticate') ?? '', /invalid_token/);
  });

  test('a token for one vault (resource = …/fhir/alice_1234) does not open another', async () => {
    const { client_secret } = await p.register('scoped', { auth: 'client_secret_basic', scope: 'system/*.rs' });
    await grant(p, { partition: 'alice_1234', client: 'scoped', scope: 'system/*.rs' });
    await grant(p, { partition: 'bob_5678', client: 'scoped', scope: 'system/*.rs' });
    const { tokenWithSecret } = await import('./helpers/fhir.ts');
    const token = await tokenWithSecret(
      p,
      'scoped',
      client_secret as string,
      `grant_type=client_credentials&resource=${encodeURIComponent(`${p.fhirBase}/alice_1234`)}`,
    );
    assert.equal((await fhir(p, { token }, 'GET', '/alice_1234/_history')).status, 200);
    assert.equal((await fhir(p, { token }, 'GET', '/bob_5678/_history')).status, 401);
  });

  /** A client with a grant on alice_1234, its secret and a token that works there. */
  async function readerWithToken(name: string) {
    const { client_secret } = await p.register(name, { auth: 'client_secret_basic', scope: 'system/*.rs' });
    await grant(p, { partition: 'alice_1234', client: name, scope: 'system/*.rs' });
    const { tokenWithSecret } = await import('./helpers/fhir.ts');
    const token = await tokenWithSecret(p, name, client_secret as string);
    assert.equal((await fhir(p, { token }, 'GET', '/alice_1234/_history')).status, 200);
    return { client_secret, token };
  }

  test('a revoked token is refused at the FHIR endpoint (H01)', async () => {
    const { client_secret, token } = await readerWithToken('revoker');
    const res = await p.fetch(`${p.base}/oauth/revoke`, {
      method: 'POST',
      dispatcher: p.agent(),
      headers: {
        authorization: `Basic ${Buffer.from(`revoker:${client_secret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: `token=${token}`,
    });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    assert.equal((await fhir(p, { token }, 'GET', '/alice_1234/_history')).status, 401);
  });

  /**
   * Commits `change` through a second store on the same database (another process, as far as the platform's
   * store can tell), then answers the status of `path` once it differs from `before`, or after 1 s.
   */
  async function statusAfterOtherProcess(
    token: string,
    path: string,
    before: number,
    change: (other: Awaited<ReturnType<typeof openStore>>) => Promise<unknown>,
  ): Promise<number> {
    const other = await openStore(p.config);
    try {
      await change(other);
    } finally {
      await other.close();
    }
    const deadline = Date.now() + 1000;
    let status = before;
    while (Date.now() < deadline) {
      status = (await fhir(p, { token }, 'GET', path)).status;
      if (status !== before) break;
      await sleep(50);
    }
    return status;
  }

  test('a revocation committed by another process on the same database is honoured within 1 s', async () => {
    // A node may mirror revoked token ids in memory; what another connection commits must still reach it.
    const { token } = await readerWithToken('revoker-2');
    const { jti, exp } = decodeJwt(token);
    const status = await statusAfterOtherProcess(token, '/alice_1234/_history', 200, (other) =>
      other.revocations.revoke(jti as string, exp as number),
    );
    assert.equal(status, 401);
  });

  test('a grant narrowed by another process on the same database binds within 1 s', async () => {
    // A node may cache the grants it looked up; what another connection commits must still reach it.
    const { token } = await readerWithToken('narrowed');
    assert.equal((await fhir(p, { token }, 'GET', '/alice_1234/Patient')).status, 200);
    const status = await statusAfterOtherProcess(token, '/alice_1234/Patient', 200, (other) =>
      addGrant(other, { partition: 'alice_1234', client: 'narrowed', scope: 'system/Observation.rs' }),
    );
    assert.equal(status, 403);
    assert.equal((await fhir(p, { token }, 'GET', '/alice_1234/Observation')).status, 200);
  });
});

describe('conditional interactions and JSON Patch (J15 J21 J53)', () => {
  test('If-None-Exist: 0 matches → 201, 1 → 200 without a new resource, 2 → 412 (J15)', async () => {
    const body = { resourceType: 'Patient', identifier: [{ system: 'urn:cond', value: 'c1' }] };
    const first = await fhir(p, tcu, 'POST', '/alice_1234/Patient', body, {
      'if-none-exist': 'identifier=urn:cond|c1',
    });
    assert.equal(first.status, 201, first.text);
    const again = await fhir(p, tcu, 'POST', '/alice_1234/Patient', body, {
      'if-none-exist': 'identifier=urn:cond|c1',
    });
    assert.equal(again.status, 200);
    assert.equal(again.json.id, first.json.id);
    await fhir(p, tcu, 'POST', '/alice_1234/Patient', body);
    const two = await fhir(p, tcu, 'POST', '/alice_1234/Patient', body, { 'if-none-exist': 'identifier=urn:cond|c1' });
    assert.equal(two.status, 412);
    const bad = await fhir(p, tcu, 'POST', '/alice_1234/Patient', body, { 'if-none-exist': 'nonsense-param=1' });
    assert.equal(bad.status, 400, 'a condition with unknown parameters is refused, not ignored');
  });

  test('conditional update PUT Type?search: 0 → 201, 1 → 200, several → 412 (J21); conditional delete', async () => {
    const body = (gender: string) => ({
      resourceType: 'Patient',
      identifier: [{ system: 'urn:cu', value: 'u1' }],
      gender,
    });
    const created = await fhir(p, tcu, 'PUT', '/alice_1234/Patient?identifier=urn:cu|u1', body('male'));
    assert.equal(created.status, 201, created.text);
    const updated = await fhir(p, tcu, 'PUT', '/alice_1234/Patient?identifier=urn:cu|u1', body('female'));
    assert.equal(updated.status, 200);
    assert.equal(updated.json.id, created.json.id);
    assert.equal(updated.headers.get('etag'), 'W/"2"');
    const mismatch = await fhir(p, tcu, 'PUT', '/alice_1234/Patient?identifier=urn:cu|u1', {
      ...body('other'),
      id: 'someone-else',
    });
    assert.equal(mismatch.status, 400);
    await fhir(p, tcu, 'POST', '/alice_1234/Patient', body('male'));
    assert.equal((await fhir(p, tcu, 'PUT', '/alice_1234/Patient?identifier=urn:cu|u1', body('male'))).status, 412);
    assert.equal(
      (await fhir(p, tcu, 'DELETE', '/alice_1234/Patient?identifier=urn:cu|u1')).status,
      412,
      'delete matches one at most',
    );
    // If-Match holds for a conditional delete as for one by id: version 2 is current, a condition without a
    // match has no version at all.
    const byId = `/alice_1234/Patient?_id=${created.json.id}`;
    assert.equal((await fhir(p, tcu, 'DELETE', byId, undefined, { 'if-match': 'W/"1"' })).status, 412);
    const none = await fhir(p, tcu, 'DELETE', '/alice_1234/Patient?_id=nobody', undefined, { 'if-match': 'W/"1"' });
    assert.equal(none.status, 412, none.text);
    assert.match(
      String((none.json.issue as { diagnostics: string }[])[0]?.diagnostics),
      /version of Patient\?_id=nobody/,
    );
    assert.equal((await fhir(p, tcu, 'GET', `/alice_1234/Patient/${created.json.id}`)).status, 200);
    assert.equal((await fhir(p, tcu, 'DELETE', byId, undefined, { 'if-match': 'W/"2"' })).status, 204);
    assert.equal((await fhir(p, tcu, 'GET', `/alice_1234/Patient/${created.json.id}`)).status, 410);
  });

  test('JSON Patch: applied, validated, versioned; test ops, id changes and stale If-Match refused (J53)', async () => {
    const id = (await fhir(p, tcu, 'POST', '/alice_1234/Observation', OBS())).json.id as string;
    const patchReq = (ops: unknown, headers: Record<string, string> = {}) =>
      fhir(p, tcu, 'PATCH', `/alice_1234/Observation/${id}`, JSON.stringify(ops), {
        'content-type': 'application/json-patch+json',
        ...headers,
      });
    const ok = await patchReq([{ op: 'replace', path: '/status', value: 'amended' }], { 'if-match': 'W/"1"' });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.status, 'amended');
    assert.equal(ok.headers.get('etag'), 'W/"2"');
    assert.equal(
      (await patchReq([{ op: 'replace', path: '/status', value: 'final' }], { 'if-match': 'W/"1"' })).status,
      412,
    );
    assert.equal((await patchReq([{ op: 'test', path: '/status', value: 'final' }])).status, 422);
    assert.equal((await patchReq([{ op: 'replace', path: '/id', value: 'other' }])).status, 422);
    assert.equal(
      (await patchReq([{ op: 'replace', path: '/status', value: 'bogus' }])).status,
      422,
      'the result is validated',
    );
    assert.equal((await patchReq([{ op: 'explode', path: '/status' }])).status, 400);
    assert.equal((await patchReq({ not: 'an array' })).status, 400);
    // A FHIR-format body is a FHIRPath Patch: a resource that is not Parameters is no patch.
    const notParameters = await fhir(p, tcu, 'PATCH', `/alice_1234/Observation/${id}`, OBS(id));
    assert.equal(notParameters.status, 400);
    assert.match(notParameters.text, /FHIRPath Patch Parameters/);
    const wrongType = await fhir(p, tcu, 'PATCH', `/alice_1234/Observation/${id}`, 'status=final', {
      'content-type': 'text/plain',
    });
    assert.equal(wrongType.status, 415);
    const history = await fhir(p, tcu, 'GET', `/alice_1234/Observation/${id}/_history`);
    assert.deepEqual(
      (history.json.entry as { request: { method: string } }[]).map((e) => e.request.method),
      ['PATCH', 'POST'],
    );
  });

  test('conditional patch: PATCH Type?search patches the one match; none is 404, several 412, no condition 400', async () => {
    const patient = (value: string) => ({
      resourceType: 'Patient',
      identifier: [{ system: 'urn:cpatch', value }],
      gender: 'male',
    });
    const only = (await fhir(p, tcu, 'POST', '/alice_1234/Patient', patient('one'))).json.id as string;
    await fhir(p, tcu, 'POST', '/alice_1234/Patient', patient('two'));
    await fhir(p, tcu, 'POST', '/alice_1234/Patient', patient('two'));
    const patchWhere = (query: string, headers: Record<string, string> = {}) =>
      fhir(p, tcu, 'PATCH', `/alice_1234/Patient${query}`, '[{"op":"replace","path":"/gender","value":"female"}]', {
        'content-type': 'application/json-patch+json',
        ...headers,
      });
    const ok = await patchWhere('?identifier=urn:cpatch|one', { 'if-match': 'W/"1"' });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.id, only);
    assert.equal(ok.json.gender, 'female');
    assert.equal(ok.headers.get('etag'), 'W/"2"');
    assert.equal((await fhir(p, tcu, 'GET', `/alice_1234/Patient/${only}`)).json.gender, 'female');
    assert.equal((await patchWhere('?identifier=urn:cpatch|one', { 'if-match': 'W/"1"' })).status, 412, 'stale');
    assert.equal((await patchWhere('?identifier=urn:cpatch|none')).status, 404);
    const several = await patchWhere('?identifier=urn:cpatch|two');
    assert.equal(several.status, 412);
    assert.match(String((several.json.issue as { diagnostics: string }[])[0]?.diagnostics), /more than one/);
    assert.equal((await patchWhere('')).status, 400);
    assert.equal((await patchWhere('?bogus-param=1')).status, 400, 'a condition is never ignored');
    // Another vault's matching Patient is not this vault's match.
    await partition(p, 'cpatch_other');
    await grant(p, { partition: 'cpatch_other', client: 'bestclinic-tcu', scope: 'system/*.cruds' });
    assert.equal((await fhir(p, tcu, 'POST', '/cpatch_other/Patient', patient('elsewhere'))).status, 201);
    assert.equal((await patchWhere('?identifier=urn:cpatch|elsewhere')).status, 404);
  });
});
