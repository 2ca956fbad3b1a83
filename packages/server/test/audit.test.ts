import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import {
  chainHash,
  expandCode,
  exportedEventBreak,
  GENESIS,
  hashHex,
  storedHash,
} from '../src/store/sql/audit-chain.ts';
import { indexKeys as indexKeysOf } from '../src/store/sql/audit-index.ts';
import {
  type PackedColumns,
  packCompact,
  packEvent,
  renderCompact,
  unpackEvent,
} from '../src/store/sql/audit-packing.ts';
import { DictionaryDeflate } from '../src/store/sql/dictionary-deflate.ts';
import { type Caller, fhir, grant, secretClient } from './helpers/fhir.ts';
import { familyVault } from './helpers/people.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';
import { rawSql } from './helpers/raw-db.ts';

// Issue 5 §2–3: a BALP AuditEvent for every access, in the data's own transaction, hash-chained, searchable by
// auditors at /audit/AuditEvent, verifiable with `carevault audit verify`; X-Request-Id / X-Correlation-Id.

let p: TestPlatform;
let vault: string;
let writer: Caller;
let auditor: Caller;
let seq = 0;

before(async () => {
  p = await startPlatform();
  ({ partition: vault } = await familyVault(p, 'urn:cara:account:jansen', 'loader'));
  writer = await secretClient(p, 'clinic', 'system/*.cruds', {
    orgOid: '2.16.528.1.1007.3.3.15123',
    orgName: 'Tjongerschans',
    purposeOfUse: ['TREAT'],
  });
  await grant(p, { partition: vault, client: 'clinic', scope: 'system/*.cruds' });
  auditor = await secretClient(p, 'auditor', 'system/AuditEvent.rs');
});
after(() => p.stop());

interface Event {
  id: string;
  type: { code: string; system: string };
  subtype?: { code: string; system: string }[];
  action?: string;
  outcome: string;
  outcomeDesc?: string;
  recorded: string;
  agent: {
    type: { coding: { code: string }[] };
    who: { identifier?: { value: string; system?: string }; display?: string };
    requestor: boolean;
    policy?: string[];
    purposeOfUse?: { coding: { code: string }[] }[];
  }[];
  entity: {
    what?: { reference?: string; identifier?: { value: string } };
    type?: { code: string };
    role?: { code: string };
    query?: string;
    detail?: { type: string; valueString: string }[];
  }[];
  extension?: { url: string; extension: { url: string; valueString: string }[] }[];
}

async function auditSearch(query: string, caller: Caller = auditor) {
  const res = await p.fetch(`${p.base}/audit/AuditEvent?${query}`, {
    dispatcher: p.agent(),
    headers: { authorization: `Bearer ${caller.token}` },
  });
  const json = (await res.json()) as { total?: number; entry?: { resource: Event }[]; issue?: unknown[] };
  return { status: res.status, total: json.total, events: (json.entry ?? []).map((e) => e.resource), json };
}

/** A FHIR request with its own X-Request-Id, and the AuditEvents that carry it. */
async function audited(method: string, path: string, body?: unknown, caller: Caller = writer) {
  const requestId = `req-${++seq}-${Date.now()}`;
  const r = await fhir(p, caller, method, path, body, { 'x-request-id': requestId, 'x-correlation-id': 'session-42' });
  const { events } = await auditSearch(`request-id=${requestId}`);
  return { r, events, requestId };
}

const roles = (e: Event) => e.agent.map((a) => a.type.coding[0]?.code);
const refs = (e: Event) => e.entity.map((x) => x.what?.reference).filter(Boolean);
const obs = (subject: string) => ({
  resourceType: 'Observation',
  status: 'final',
  code: { text: 'peak flow' },
  subject: { reference: `Patient/${subject}` },
});

describe('every FHIR interaction leaves its BALP AuditEvent (L01–L05)', () => {
  let id: string;

  test('create: action C, client Source (110153), server Destination, patient and object entities, correlation ids', async () => {
    const { r, events, requestId } = await audited('POST', `/${vault}/Observation`, obs('mother'));
    assert.equal(r.status, 201);
    id = (r.json as { id: string }).id;
    assert.equal(events.length, 1);
    const [e] = events as [Event];
    assert.equal(e.type.code, 'rest');
    assert.equal(e.subtype?.[0]?.code, 'create');
    assert.equal(e.action, 'C');
    assert.equal(e.outcome, '0');
    assert.deepEqual(roles(e).slice(0, 1), ['110153']);
    assert.ok(roles(e).includes('110152'), 'server as Destination');
    const client = e.agent[0];
    assert.equal(client?.who.identifier?.value, 'clinic');
    assert.equal(client?.purposeOfUse?.[0]?.coding[0]?.code, 'TREAT');
    assert.ok(client?.policy?.[0], 'token jti as policy');
    const org = e.agent.find((a) => a.type.coding[0]?.code === 'UserOrganization');
    assert.equal(org?.who.identifier?.value, 'urn:oid:2.16.528.1.1007.3.3.15123');
    assert.deepEqual(refs(e), ['Patient/mother', `Observation/${id}/_history/1`]);
    const rid = e.entity.find((x) => x.type?.code === 'XrequestId');
    assert.equal(rid?.what?.identifier?.value, requestId);
    assert.equal(rid?.detail?.[0]?.valueString, 'session-42');
    // J52: both ids echoed.
    assert.equal(r.headers.get('x-request-id'), requestId);
    assert.equal(r.headers.get('x-correlation-id'), 'session-42');
    const nen = e.extension?.[0]?.extension.find((x) => x.url === 'autorisatieprotocol');
    assert.equal(nen?.valueString, 'vault-grant:clinic');
  });

  test('read and vread: action R, client Destination (110152)', async () => {
    for (const path of [`/${vault}/Observation/${id}`, `/${vault}/Observation/${id}/_history/1`]) {
      const { r, events } = await audited('GET', path);
      assert.equal(r.status, 200);
      assert.equal(events.length, 1, path);
      const [e] = events as [Event];
      assert.equal(e.subtype?.[0]?.code, path.includes('_history') ? 'vread' : 'read');
      assert.equal(e.action, 'R');
      assert.equal(roles(e)[0], '110152');
      assert.deepEqual(refs(e), ['Patient/mother', `Observation/${id}/_history/1`]);
    }
  });

  test('update and patch: action U; delete: action D, client Application (110150), server custodian', async () => {
    const u = await audited('PUT', `/${vault}/Observation/${id}`, { ...obs('mother'), id, status: 'amended' });
    assert.equal(u.events[0]?.subtype?.[0]?.code, 'update');
    assert.equal(u.events[0]?.action, 'U');
    const pt = await fhir(
      p,
      writer,
      'PATCH',
      `/${vault}/Observation/${id}`,
      '[{"op":"replace","path":"/status","value":"final"}]',
      {
        'content-type': 'application/json-patch+json',
        'x-request-id': 'patch-1',
      },
    );
    assert.equal(pt.status, 200);
    const patchEvents = (await auditSearch('request-id=patch-1')).events;
    assert.equal(patchEvents[0]?.subtype?.[0]?.code, 'patch');
    const d = await audited('DELETE', `/${vault}/Observation/${id}`);
    assert.equal(d.r.status, 204);
    const [e] = d.events as [Event];
    assert.equal(e.action, 'D');
    assert.equal(roles(e)[0], '110150');
    assert.ok(roles(e).includes('custodian'));
    assert.deepEqual(refs(e), ['Patient/mother', `Observation/${id}/_history/4`]);
  });

  test('read events name the patients of the version disclosed: vread the old subject, history every one', async () => {
    const c = await audited('POST', `/${vault}/Observation`, obs('mother'));
    const moved = (c.r.json as { id: string }).id;
    // Read before the update too: what a read of version 1 found must not answer for version 2.
    const before = await audited('GET', `/${vault}/Observation/${moved}`);
    assert.deepEqual(refs(before.events[0] as Event), ['Patient/mother', `Observation/${moved}/_history/1`]);
    const u = await audited('PUT', `/${vault}/Observation/${moved}`, { ...obs('child'), id: moved });
    assert.equal(u.r.status, 200);
    const now = await audited('GET', `/${vault}/Observation/${moved}`);
    assert.deepEqual(refs(now.events[0] as Event), ['Patient/child', `Observation/${moved}/_history/2`]);
    const then = await audited('GET', `/${vault}/Observation/${moved}/_history/1`);
    assert.deepEqual(refs(then.events[0] as Event), ['Patient/mother', `Observation/${moved}/_history/1`]);
    const h = await audited('GET', `/${vault}/Observation/${moved}/_history`);
    assert.deepEqual(refs(h.events[0] as Event).sort(), [`Observation/${moved}`, 'Patient/child', 'Patient/mother']);
  });

  test('search: action E, the query recorded base64 (role 24), results not recorded; history too', async () => {
    const { events } = await audited('GET', `/${vault}/Observation?patient=mother&status=final`);
    const [e] = events as [Event];
    assert.equal(e.subtype?.[0]?.code, 'search-type');
    assert.equal(e.action, 'E');
    const q = e.entity.find((x) => x.role?.code === '24');
    assert.equal(Buffer.from(q?.query as string, 'base64').toString(), 'Observation?patient=mother&status=final');
    assert.deepEqual(refs(e), ['Patient/mother']);
    const h = await audited('GET', `/${vault}/Patient/mother/_history`);
    assert.equal(h.events[0]?.subtype?.[0]?.code, 'history-instance');
  });

  test('a transaction leaves one event per entry; a failed one leaves a failure event and no data', async () => {
    const ok = await audited('POST', `/${vault}`, {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:1', request: { method: 'POST', url: 'Observation' }, resource: obs('mother') },
        { fullUrl: 'urn:uuid:2', request: { method: 'POST', url: 'Observation' }, resource: obs('child') },
        { request: { method: 'GET', url: 'Patient/child' } },
      ],
    });
    assert.equal(ok.r.status, 200);
    assert.deepEqual(ok.events.map((e) => e.subtype?.[0]?.code).sort(), ['create', 'create', 'read']);
    const before = (await fhir(p, writer, 'GET', `/${vault}/Observation?_summary=count`)).json.total;
    const failed = await audited('POST', `/${vault}`, {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'POST', url: 'Observation' }, resource: obs('mother') },
        { request: { method: 'PUT', url: 'Observation/x', ifMatch: 'W/"9"' }, resource: { ...obs('mother'), id: 'x' } },
      ],
    });
    assert.ok(failed.r.status >= 400);
    assert.equal((await fhir(p, writer, 'GET', `/${vault}/Observation?_summary=count`)).json.total, before, 'no data');
    assert.equal(failed.events.length, 1);
    assert.equal(failed.events[0]?.outcome, '4');
    assert.equal(failed.events[0]?.subtype?.[0]?.code, 'transaction');
    assert.ok(failed.events[0]?.outcomeDesc);
  });

  test('policy denials and bad tokens are Security Alerts (110113) with outcome 4', async () => {
    const stranger = await secretClient(p, 'stranger', 'system/*.rs');
    const denied = await audited('GET', `/${vault}/Patient/mother`, undefined, stranger);
    assert.equal(denied.r.status, 404);
    assert.equal(denied.events[0]?.type.code, '110113');
    assert.equal(denied.events[0]?.outcome, '4');
    assert.equal(denied.events[0]?.agent[0]?.who.identifier?.value, 'stranger');
    const reader = await secretClient(p, 'reader', 'system/Patient.rs');
    await grant(p, { partition: vault, client: 'reader', scope: 'system/*.rs' });
    const scope = await audited('POST', `/${vault}/Observation`, obs('mother'), reader);
    assert.equal(scope.r.status, 403);
    assert.equal(scope.events[0]?.type.code, '110113');
    assert.equal(scope.events[0]?.subtype?.[0]?.code, 'create');
    const bad = await audited('GET', `/${vault}/Patient/mother`, undefined, { token: 'not-a-token' });
    assert.equal(bad.r.status, 401);
    assert.equal(bad.events[0]?.type.code, '110113');
  });
});

describe('token and introspection events (L07, L10)', () => {
  test('token issuance (ITI-71) records the request without secrets and the token jti; refusals too', async () => {
    const { client_secret } = await p.register('tokens-audited', { auth: 'client_secret_basic', scope: 'system/*.rs' });
    const basic = `Basic ${Buffer.from(`tokens-audited:${client_secret}`).toString('base64')}`;
    const res = await p.fetch(p.tokenUrl, {
      method: 'POST',
      dispatcher: p.agent(),
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', 'x-request-id': 'tok-1' },
      body: 'grant_type=client_credentials&scope=system%2FPatient.rs',
    });
    const token = ((await res.json()) as { access_token: string }).access_token;
    const [e] = (await auditSearch('request-id=tok-1')).events as [Event];
    assert.equal(e.type.code, '110114');
    assert.equal(e.subtype?.[0]?.code, 'ITI-71');
    assert.equal(e.outcome, '0');
    const q = Buffer.from(e.entity.find((x) => x.role?.code === '24')?.query as string, 'base64').toString();
    assert.match(q, /grant_type=client_credentials/);
    assert.ok(!q.includes(client_secret as string));
    const jti = e.entity.find((x) => x.role?.code === '13')?.what?.identifier?.value;
    assert.equal(jti, JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()).jti);
    assert.ok(!JSON.stringify(e).includes(token), 'never the token itself');
    const refused = await p.fetch(p.tokenUrl, {
      method: 'POST',
      dispatcher: p.agent(),
      headers: {
        authorization: `Basic ${Buffer.from('tokens-audited:wrong').toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
        'x-request-id': 'tok-2',
      },
      body: 'grant_type=client_credentials',
    });
    assert.equal(refused.status, 401);
    const [r] = (await auditSearch('request-id=tok-2')).events as [Event];
    assert.equal(r.outcome, '4');
    assert.match(r.outcomeDesc ?? '', /invalid_client/);
    // ITI-102: the introspection names the token by jti only.
    const intro = await p.fetch(`${p.base}/oauth/introspect`, {
      method: 'POST',
      dispatcher: p.agent(),
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', 'x-request-id': 'intro-1' },
      body: `token=${token}`,
    });
    assert.equal(intro.status, 200);
    const [i] = (await auditSearch('request-id=intro-1')).events as [Event];
    assert.equal(i.subtype?.[0]?.code, 'ITI-102');
    assert.equal(i.entity.find((x) => x.role?.code === '13')?.what?.identifier?.value, jti);
    assert.ok(!JSON.stringify(i).includes(token));
  });
});

describe('/audit/AuditEvent (ITI-81 style)', () => {
  test('search by patient, entity, agent, type, subtype, outcome and date; paging; the search itself is audited', async () => {
    const byPatient = await auditSearch('patient=Patient/child&_count=100');
    assert.equal(byPatient.status, 200);
    assert.ok(byPatient.events.length >= 1);
    assert.ok(byPatient.events.every((e) => e.entity.some((x) => x.what?.reference === 'Patient/child')));
    const byAgent = await auditSearch('agent=stranger');
    assert.ok(
      byAgent.events.length >= 1 &&
        byAgent.events.every((e) => e.agent.some((a) => a.who.identifier?.value === 'stranger')),
    );
    const failures = await auditSearch('outcome=4&type=110113');
    assert.ok(failures.events.length >= 3);
    const creates = await auditSearch('subtype=http://hl7.org/fhir/restful-interaction|create&_count=2');
    assert.equal(creates.events.length, 2);
    assert.ok((creates.total ?? 0) >= 3);
    assert.ok((creates.json as { link: { relation: string }[] }).link.some((l) => l.relation === 'next'));
    const future = await auditSearch('date=gt2100-01-01');
    assert.equal(future.total, 0);
    const today = await auditSearch(`date=${new Date().toISOString().slice(0, 10)}&_count=0`);
    assert.ok((today.total ?? 0) > 10);
    const reads = await auditSearch('agent=auditor&outcome=0');
    assert.ok(
      reads.events.some((e) => e.outcomeDesc === 'audit trail read'),
      'reading the trail is audited',
    );
    assert.equal((await auditSearch('nonsense=1')).status, 400);
    // Every event reads back by its id (ids hold '-' and '.': 20 of them almost surely include both).
    const urls = ((await auditSearch('_count=20')).json as unknown as { entry: { fullUrl: string }[] }).entry.map(
      (e) => e.fullUrl,
    );
    assert.equal(urls.length, 20);
    for (const url of urls) {
      const one = await p.fetch(url, { dispatcher: p.agent(), headers: { authorization: `Bearer ${auditor.token}` } });
      assert.equal(one.status, 200, url);
      assert.equal(((await one.json()) as { resourceType: string }).resourceType, 'AuditEvent');
    }
    const missing = await p.fetch(`${p.base}/audit/AuditEvent/nope`, {
      dispatcher: p.agent(),
      headers: { authorization: `Bearer ${auditor.token}` },
    });
    assert.equal(missing.status, 404);
  });

  test('next links page by position: every event once, newest first, events appended meanwhile shift nothing', async () => {
    const query = 'subtype=http://hl7.org/fhir/restful-interaction|create';
    const all = await auditSearch(`${query}&_count=1000`);
    assert.ok(all.events.length >= 3);
    const expected = all.events.map((e) => e.id);
    const seen: string[] = [];
    let next: string | undefined = `${query}&_count=2`;
    let pages = 0;
    while (next) {
      const page = await auditSearch(next);
      assert.equal(page.status, 200, JSON.stringify(page.json));
      if (pages === 0) assert.equal(page.total, expected.length, 'the first page counts');
      else assert.equal(page.total, undefined, 'a page by position does not count');
      seen.push(...page.events.map((e) => e.id));
      const link = (page.json as { link: { relation: string; url: string }[] }).link.find((l) => l.relation === 'next');
      if (link) {
        const params = new URL(link.url).searchParams;
        assert.match(params.get('_cursor') ?? '', /^[1-9][0-9]*$/);
        assert.equal(params.get('_offset'), null);
      }
      if (pages === 0) {
        // A new create between two pages: newest first, it lies before the position, so no event is seen twice.
        assert.equal((await fhir(p, writer, 'POST', `/${vault}/Observation`, obs('mother'))).status, 201);
      }
      next = link ? link.url.split('?')[1] : undefined;
      pages++;
    }
    assert.deepEqual(seen, expected, 'each event once, in the order of the trail');
    assert.equal(pages, Math.ceil(expected.length / 2));
    const counted = await auditSearch(`${query}&_count=2&_cursor=999999999999999&_total=accurate`);
    assert.equal(counted.total, expected.length + 1, 'asked for, a page by position counts');
    for (const bad of ['0', '-1', 'abc', '1e5', '9999999999999999', "1' OR 1=1"]) {
      assert.equal((await auditSearch(`_cursor=${encodeURIComponent(bad)}`)).status, 400, bad);
    }
    assert.equal((await auditSearch('_cursor=5&_offset=2')).status, 400);
    assert.equal((await auditSearch('_total=maybe')).status, 400);
    assert.equal((await auditSearch('_total=none')).total, undefined);
  });

  test('only the explicit auditor scope reads it; nobody writes it', async () => {
    const wildcard = await secretClient(p, 'wildcard', 'system/*.rs');
    assert.equal((await auditSearch('', wildcard)).status, 403);
    const none = await p.fetch(`${p.base}/audit/AuditEvent`, { dispatcher: p.agent() });
    assert.equal(none.status, 401);
    const post = await p.fetch(`${p.base}/audit/AuditEvent`, {
      method: 'POST',
      dispatcher: p.agent(),
      headers: { authorization: `Bearer ${auditor.token}`, 'content-type': 'application/fhir+json' },
      body: '{"resourceType":"AuditEvent"}',
    });
    assert.equal(post.status, 405);
    const inVault = await fhir(p, writer, 'POST', `/${vault}/AuditEvent`, {
      resourceType: 'AuditEvent',
      recorded: new Date().toISOString(),
      type: { code: 'x' },
      agent: [],
      source: { observer: {} },
    });
    assert.equal(inVault.status, 403);
  });
});

describe('hash chain (carevault audit verify)', () => {
  type Row = PackedColumns & { seq: number; packed: Uint8Array; type: string; subtype: string | null };
  const ROW = 'seq, packed, id, recorded, request_id, correlation_id, type, subtype';

  test('events written by earlier releases (the BALP JSON hashed and stored) still read and verify', async () => {
    // The newest event becomes one of each older form in turn (it has no successor whose link would break).
    const [row] = await rawSql<Row>(p.dataDir, `SELECT ${ROW} FROM audit_events ORDER BY seq DESC LIMIT 1`);
    const [before] = await rawSql<{ hash: string }>(
      p.dataDir,
      'SELECT hash FROM audit_events WHERE seq < ? ORDER BY seq DESC LIMIT 1',
      [row?.seq],
    );
    if (!row || !before) assert.fail('the trail holds events');
    const { json, refs } = unpackEvent(row.packed, row);
    if (!refs) assert.fail('a format 4 event holds its refs');
    const prev = hashHex(before.hash);
    const columns = {
      ...row,
      partition: null as string | null,
      action: null as string | null,
      outcome: '',
      type: expandCode(row.type),
      subtype: row.subtype === null ? null : expandCode(row.subtype),
    };
    const [rest] = await rawSql<{ partition: string | null; action: string | null; outcome: string }>(
      p.dataDir,
      'SELECT partition, action, outcome FROM audit_events WHERE seq = ?',
      [row.seq],
    );
    Object.assign(columns, rest);
    const olderHash = storedHash(chainHash(prev, columns, refs, { json }));
    const store = async (packed: Uint8Array | null, extra: Record<string, unknown> = {}) => {
      const sets = Object.keys(extra).map((k) => `${k} = ?`);
      await rawSql(
        p.dataDir,
        `UPDATE audit_events SET packed = ?, hash = ?${sets.map((x) => `, ${x}`).join('')} WHERE seq = ?`,
        [packed, olderHash, ...Object.values(extra), row.seq],
      );
      const verified = await p.store.audit.verify();
      assert.equal(verified.ok, true, JSON.stringify(verified));
      assert.equal(await p.store.audit.get(row.id), json);
    };
    // Format 3 (the JSON against the dictionary event of its kind) and 2 (against the whole dictionary).
    await store(packEvent(json, row, refs));
    await store(packEvent(json, row, refs, 2));
    // Format 1 kept no refs: they are in audit_refs, as in rows from before refs were packed.
    for (const r of refs) {
      await rawSql(p.dataDir, 'INSERT INTO audit_refs (seq, kind, value) VALUES (?, ?, ?)', [row.seq, r.kind, r.value]);
    }
    // Format 1 (the whole JSON) with the type's full system, and the searches that find it.
    await store(packEvent(json), { type: columns.type });
    const typed = await p.store.audit.search({ type: [columns.type], limit: 1000, offset: 0 });
    assert.ok(
      typed.events.some((e) => JSON.parse(e).id === row.id),
      'the row with the full system',
    );
    assert.ok(typed.events.length > 1, 'and the rows with the compact one');
    // The JSON in content (before events were packed).
    await store(null, { content: json });
    // Such old rows also stored their predecessor's hash (rows since do not: the hash covers it): checked too.
    await store(null, { content: json, prev_hash: prev });
    await rawSql(p.dataDir, 'UPDATE audit_events SET prev_hash = ? WHERE seq = ?', ['f'.repeat(64), row.seq]);
    assert.match((await p.store.audit.verify()).firstBad?.reason ?? '', /link to the previous event is broken/);
    await rawSql(p.dataDir, 'UPDATE audit_events SET content = ? WHERE seq = ?', [
      json.replace(row.id, `${row.id}x`),
      row.seq,
    ]);
    await rawSql(p.dataDir, 'UPDATE audit_events SET prev_hash = ? WHERE seq = ?', [prev, row.seq]);
    assert.match((await p.store.audit.verify()).firstBad?.reason ?? '', /altered/);
    await store(null, { content: json });
  });

  test('verify passes, then names the event that was altered, then the gap where one was deleted', async () => {
    const ok = await p.store.audit.verify();
    assert.equal(ok.ok, true);
    assert.ok(ok.events > 20);
    const [row] = await rawSql<Row>(p.dataDir, `SELECT ${ROW} FROM audit_events ORDER BY seq LIMIT 1 OFFSET 5`);
    if (!row) assert.fail('the calls above should have written events');
    // Stored compactly: the type's system as one letter; the event's input packed without the row's columns,
    // the BALP JSON rendered from it when read.
    assert.match(row.type, /^[A-Z]\|/);
    const original = Buffer.from(row.packed);
    assert.equal(original[0], 4);
    assert.equal(original.includes(Buffer.from(row.id)), false);
    const { json, refs, compact } = unpackEvent(original, row);
    if (compact === undefined || refs === undefined) assert.fail('a format 4 event holds its input and its refs');
    assert.ok(
      refs.some((r) => r.kind === 'agent'),
      'the refs travel in the packed event',
    );
    assert.doesNotMatch(compact, /resourceType|"id":/);
    assert.equal(JSON.parse(json).id, row.id);
    assert.equal(await p.store.audit.get(row.id), json);
    const repack = (input: string, r = refs) => packCompact(input, r, row.subtype);
    // An intruder who can write the database can repack an altered event.
    assert.match(compact, /"outcome":"0"/);
    await rawSql(p.dataDir, 'UPDATE audit_events SET packed = ? WHERE seq = ?', [
      repack(compact.replace('"outcome":"0"', '"outcome":"4"')),
      row.seq,
    ]);
    const altered = await p.store.audit.verify();
    assert.equal(altered.ok, false);
    assert.equal(altered.firstBad?.seq, row.seq);
    assert.match(altered.firstBad?.reason ?? '', /altered/);
    // Or hide it from a search by its refs.
    await rawSql(p.dataDir, 'UPDATE audit_events SET packed = ? WHERE seq = ?', [repack(compact, []), row.seq]);
    assert.equal((await p.store.audit.verify()).firstBad?.seq, row.seq);
    // Or pass the rendered JSON off as the event in an older format (the hash names the form it covers).
    await rawSql(p.dataDir, 'UPDATE audit_events SET packed = ? WHERE seq = ?', [packEvent(json, row, refs), row.seq]);
    assert.equal((await p.store.audit.verify()).firstBad?.seq, row.seq);
    // Or change a column the packed input leaves out: the JSON read back changes with it.
    await rawSql(p.dataDir, 'UPDATE audit_events SET packed = ?, request_id = ? WHERE seq = ?', [
      original,
      'forged',
      row.seq,
    ]);
    assert.equal((await p.store.audit.verify()).firstBad?.seq, row.seq);
    await rawSql(p.dataDir, 'UPDATE audit_events SET packed = ? WHERE seq = ?', [Buffer.from([4, 3, 2, 1]), row.seq]);
    assert.match((await p.store.audit.verify()).firstBad?.reason ?? '', /cannot be unpacked/);
    await rawSql(p.dataDir, 'UPDATE audit_events SET packed = ?, request_id = ? WHERE seq = ?', [
      original,
      row.request_id,
      row.seq,
    ]);
    assert.equal((await p.store.audit.verify()).ok, true);
    // The search index is checked whole: a key removed (an event hidden from search) or added is found.
    const [key] = await rawSql<{ kind: string; value: string; seq: number }>(
      p.dataDir,
      'SELECT kind, value, seq FROM audit_index WHERE seq = ?',
      [row.seq],
    );
    await rawSql(p.dataDir, 'DELETE FROM audit_index WHERE seq = ?', [row.seq]);
    const hidden = await p.store.audit.verify();
    assert.equal(hidden.ok, false);
    assert.match(hidden.index ?? '', /search index of the trail does not match its events/);
    await rawSql(p.dataDir, 'INSERT INTO audit_index (kind, value, seq) VALUES (?, ?, ?)', [
      key?.kind,
      key?.value,
      row.seq,
    ]);
    assert.equal((await p.store.audit.verify()).ok, false, 'one key is back, the others are missing');
    await rawSql(p.dataDir, 'DELETE FROM audit_index WHERE seq = ?', [row.seq]);
    for (const k of indexKeysOf(refs)) {
      await rawSql(p.dataDir, 'INSERT INTO audit_index (kind, value, seq) VALUES (?, ?, ?)', [
        k.kind,
        k.value,
        row.seq,
      ]);
    }
    assert.equal((await p.store.audit.verify()).ok, true);
    await rawSql(p.dataDir, 'DELETE FROM audit_events WHERE seq = ?', [row.seq + 1]);
    const deleted = await p.store.audit.verify();
    assert.equal(deleted.ok, false);
    assert.equal(deleted.firstBad?.seq, row.seq + 2);
    assert.match(deleted.firstBad?.reason ?? '', /deleted/);
  });
});

describe('packed events', () => {
  test('a query entity packs as its text and comes back as the same base64, whatever it holds', () => {
    const columns = {
      id: 'ev-1',
      recorded: Date.parse('2026-12-02T10:00:00.000Z'),
      request_id: 'r1',
      correlation_id: null,
    };
    const queries = [
      'Observation?patient=mother&status=final',
      'Patient?name="quoted"\\back&x=\u0001\n\t',
      'Patient?name=Ærø😀&id=ev-1',
    ].map((q) => Buffer.from(q, 'utf8').toString('base64'));
    queries.push(Buffer.from([0xff, 0xfe, 0x00, 0x80]).toString('base64')); // not UTF-8: stays base64
    for (const query of queries) {
      const json = JSON.stringify({
        resourceType: 'AuditEvent',
        id: 'ev-1',
        recorded: '2026-12-02T10:00:00.000Z',
        entity: [{ query, description: 'x' }, { query }],
      });
      const refs = [{ kind: 'agent', value: 'ev-1' }];
      assert.deepEqual(unpackEvent(packEvent(json, columns, refs), columns), { json, refs });
    }
  });

  test("the kept deflate stream writes deflateRawSync's bytes, one input after another, large ones too", () => {
    const dictionaries = [Buffer.from('{"resourceType":"AuditEvent","action":"R"}'.repeat(20)), Buffer.from('x')];
    const deflaters = dictionaries.map((d) => new DictionaryDeflate(d));
    // Empty, typical, not UTF-8, and larger than the kept stream's output buffer (not compressible).
    const inputs = [
      Buffer.alloc(0),
      Buffer.from('{"resourceType":"AuditEvent","action":"E","entity":[{"what":"Patient/1"}]}'),
      Buffer.from([0xff, 0x00, 0xfe]),
      randomBytes(200_000),
      Buffer.from('{"action":"R"}'.repeat(10_000)),
    ];
    for (const input of [...inputs, ...inputs.reverse()]) {
      for (const [k, deflater] of deflaters.entries()) {
        const dictionary = dictionaries[k] as Buffer;
        const packed = deflater.deflate(input);
        assert.deepEqual(packed, deflateRawSync(input, { dictionary }));
        assert.deepEqual(inflateRawSync(packed, { dictionary }), input);
      }
    }
    // Still the kept stream after the inputs it could not take (on this Node; else the test above proves little).
    for (const deflater of deflaters) assert.ok(deflater.kept);
  });
});

describe('compact inputs', () => {
  test('an input that hashes right but renders nothing, or another event, is refused, not a crash', () => {
    const columns = {
      id: 'ev-1',
      partition: null,
      recorded: Date.parse('2026-12-03T10:00:00.000Z'),
      type: 'http://dicom.nema.org/resources/ontology/DCM|110112',
      subtype: null,
      action: 'E',
      outcome: '0',
      request_id: null,
      correlation_id: null,
    };
    const event = (compact: string, content: string) => ({
      seq: 1,
      id: columns.id,
      partition: null,
      recorded: columns.recorded,
      type: columns.type,
      subtype: null,
      action: 'E',
      outcome: '0',
      requestId: null,
      correlationId: null,
      refs: [],
      prevHash: '',
      hash: chainHash(GENESIS, columns, [], { compact }),
      content,
      compact,
    });
    const good = JSON.stringify({ type: { code: '110112' }, outcome: '0', observer: 'https://x', who: {} });
    assert.equal(exportedEventBreak(GENESIS, event(good, renderCompact(columns, good))), undefined);
    const hostile = JSON.stringify({ patients: 5, who: {} });
    assert.match(exportedEventBreak(GENESIS, event(hostile, '{}')) ?? '', /not the one its hashed input renders/);
    assert.match(
      exportedEventBreak(GENESIS, event(good, '{"resourceType":"AuditEvent"}')) ?? '',
      /not the one its hashed input renders/,
    );
  });
});

describe('correlation ids (J52)', () => {
  test('absent ids are generated as 12-character ids; unusable ones are replaced', async () => {
    const r = await fhir(p, writer, 'GET', `/${vault}/metadata`);
    assert.match(r.headers.get('x-request-id') ?? '', /^[A-Za-z0-9_-]{12}$/);
    assert.match(r.headers.get('x-correlation-id') ?? '', /^[A-Za-z0-9_-]{12}$/);
    const hostile = await fhir(p, writer, 'GET', `/${vault}/metadata`, undefined, { 'x-request-id': 'a b<script>' });
    assert.match(hostile.headers.get('x-request-id') ?? '', /^[A-Za-z0-9_-]{12}$/);
    const token = await p.fetch(`${p.base}/.well-known/openid-configuration`, {
      dispatcher: p.agent(),
      headers: { 'x-correlation-id': 'zv-session-1' },
    });
    assert.equal(token.headers.get('x-correlation-id'), 'zv-session-1');
    await token.arrayBuffer();
  });
});
