import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from 'fhir-kit-client';
import { Agent, setGlobalDispatcher } from 'undici';
import { auditEvents, type Caller, fhir, grant, grantedClient, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// R4 Resource-meta, -meta-add and -meta-delete: the meta of a resource or a version, the tags, security labels
// and profiles in use in a type or a vault, and adding or removing them.
let p: TestPlatform;
let writer: Caller;
let reader: Caller;
let auditor: Caller;

const T = 'urn:example:tags';
const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const PROFILE = 'http://example.org/StructureDefinition/vital';
type Meta = {
  versionId?: string;
  lastUpdated?: string;
  profile?: string[];
  tag?: { system?: string; code: string; display?: string }[];
  security?: { system?: string; code: string }[];
};

const metaOf = (json: Record<string, unknown>): Meta => {
  const [out] = (json as { parameter?: { name: string; valueMeta: Meta }[] }).parameter ?? [];
  assert.equal(out?.name, 'return');
  return out.valueMeta;
};
const codes = (list: { system?: string; code: string }[] | undefined) =>
  (list ?? []).map((c) => `${c.system ?? ''}|${c.code}`);
const change = (tag: Meta['tag'] = [], security: Meta['security'] = [], profile: string[] = []) => ({
  resourceType: 'Parameters',
  parameter: [
    {
      name: 'meta',
      valueMeta: {
        ...(tag.length ? { tag } : {}),
        ...(security.length ? { security } : {}),
        ...(profile.length ? { profile } : {}),
      },
    },
  ],
});
const ids = (json: Record<string, unknown>) =>
  ((json.entry ?? []) as { resource: { id: string } }[]).map((e) => e.resource.id).sort();

async function observation(vault: string, tag: Meta['tag']) {
  const r = await fhir(p, writer, 'POST', `/${vault}/Observation`, {
    resourceType: 'Observation',
    meta: { tag },
    status: 'final',
    code: { text: 'pulse' },
  });
  assert.equal(r.status, 201, r.text);
  return r.json.id as string;
}

before(async () => {
  p = await startPlatform();
  await partition(p, 'meta');
  await partition(p, 'meta_other');
  writer = await grantedClient(p, 'meta-writer', 'system/*.cruds', ['meta', 'meta_other']);
  reader = await grantedClient(p, 'meta-reader', 'system/*.rs', ['meta']);
  auditor = await secretClient(p, 'meta-auditor', 'system/AuditEvent.rs');
});
after(() => p.stop());

describe('$meta, $meta-add, $meta-delete', () => {
  test('$meta answers the meta of a resource and of each of its versions', async () => {
    const id = await observation('meta', [{ system: T, code: 'a', display: 'A' }]);
    const first = await fhir(p, reader, 'GET', `/meta/Observation/${id}/$meta`);
    assert.equal(first.status, 200, first.text);
    const meta = metaOf(first.json);
    assert.equal(meta.versionId, '1');
    assert.deepEqual(meta.tag, [{ system: T, code: 'a', display: 'A' }]);
    // POST with an empty Parameters, as operations.html allows.
    const posted = await fhir(p, reader, 'POST', `/meta/Observation/${id}/$meta`, { resourceType: 'Parameters' });
    assert.deepEqual(metaOf(posted.json).tag, meta.tag);
    const added = await fhir(
      p,
      writer,
      'POST',
      `/meta/Observation/${id}/$meta-add`,
      change([{ system: T, code: 'b' }]),
    );
    assert.equal(added.status, 200, added.text);
    const v1 = metaOf((await fhir(p, reader, 'GET', `/meta/Observation/${id}/_history/1/$meta`)).json);
    const v2 = metaOf((await fhir(p, reader, 'GET', `/meta/Observation/${id}/_history/2/$meta`)).json);
    assert.deepEqual([codes(v1.tag), codes(v2.tag)], [[`${T}|a`], [`${T}|a`, `${T}|b`]]);
    assert.equal((await fhir(p, reader, 'GET', `/meta/Observation/${id}/_history/9/$meta`)).status, 404);
    assert.equal((await fhir(p, reader, 'GET', `/meta/Observation/nothing-here/$meta`)).status, 404);
    assert.equal((await fhir(p, reader, 'GET', `/meta/Observation/${id}/$meta?x=1`)).status, 400);
    // Another vault's resource is not found, as any other read.
    assert.equal((await fhir(p, writer, 'GET', `/meta_other/Observation/${id}/$meta`)).status, 404);
  });

  test('$meta-add adds to the sets once, as a new version the search index knows; nothing new writes nothing', async () => {
    const id = await observation('meta', [{ system: T, code: 'a', display: 'A' }]);
    const body = change(
      [
        { system: T, code: 'a', display: 'another display: the same tag' },
        { system: T, code: 'b' },
        { system: T, code: 'b' },
      ],
      [{ system: CONF, code: 'R' }],
      [PROFILE],
    );
    const added = await fhir(p, writer, 'POST', `/meta/Observation/${id}/$meta-add`, body);
    assert.equal(added.status, 200, added.text);
    assert.equal(added.headers.get('etag'), 'W/"2"');
    const meta = metaOf(added.json);
    assert.equal(meta.versionId, '2');
    assert.deepEqual(meta.tag, [
      { system: T, code: 'a', display: 'A' },
      { system: T, code: 'b' },
    ]);
    assert.deepEqual(codes(meta.security), [`${CONF}|R`]);
    assert.deepEqual(meta.profile, [PROFILE]);
    const read = await fhir(p, reader, 'GET', `/meta/Observation/${id}`);
    assert.deepEqual((read.json.meta as Meta).tag, meta.tag);
    for (const q of [`_tag=${T}|b`, `_security=${CONF}|R`, `_profile=${PROFILE}`]) {
      assert.deepEqual(ids((await fhir(p, reader, 'GET', `/meta/Observation?${q}&_id=${id}`)).json), [id], q);
    }
    // The same again: no new version.
    const again = await fhir(p, writer, 'POST', `/meta/Observation/${id}/$meta-add`, body);
    assert.equal(again.status, 200);
    assert.equal(metaOf(again.json).versionId, '2');
    const history = await fhir(p, reader, 'GET', `/meta/Observation/${id}/_history`);
    assert.equal((history.json.entry as unknown[]).length, 2);
    // If-Match as for any write.
    const stale = await fhir(p, writer, 'POST', `/meta/Observation/${id}/$meta-add`, change([{ code: 'c' }]), {
      'if-match': 'W/"1"',
    });
    assert.equal(stale.status, 412);
  });

  test('$meta-delete removes tags and labels by system and code, profiles by URL; an emptied list goes', async () => {
    const id = await observation('meta', [
      { system: T, code: 'a' },
      { system: T, code: 'b' },
    ]);
    await fhir(p, writer, 'POST', `/meta/Observation/${id}/$meta-add`, change([], [{ system: CONF, code: 'R' }]));
    const removed = await fhir(
      p,
      writer,
      'POST',
      `/meta/Observation/${id}/$meta-delete`,
      change([{ system: T, code: 'a', display: 'ignored' }, { code: 'a' }], [{ system: CONF, code: 'R' }], [PROFILE]),
    );
    assert.equal(removed.status, 200, removed.text);
    const meta = metaOf(removed.json);
    assert.deepEqual(codes(meta.tag), [`${T}|b`]);
    assert.equal(meta.security, undefined);
    assert.equal(meta.versionId, '3');
    assert.deepEqual(ids((await fhir(p, reader, 'GET', `/meta/Observation?_tag=${T}|a&_id=${id}`)).json), []);
    assert.deepEqual(ids((await fhir(p, reader, 'GET', `/meta/Observation?_security=${CONF}|R&_id=${id}`)).json), []);
  });

  test('$meta on a type or the vault lists what is in use there, of nothing deleted and of no other vault', async () => {
    await partition(p, 'meta_inuse');
    await grant(p, { partition: 'meta_inuse', client: 'meta-writer', scope: 'system/*.cruds' });
    const inUse = async (path: string, caller = writer) => {
      const r = await fhir(p, caller, 'GET', `/meta_inuse${path}`);
      assert.equal(r.status, 200, r.text);
      return metaOf(r.json);
    };
    assert.deepEqual(await inUse('/$meta'), {});
    await observation('meta_inuse', [{ system: T, code: 'obs' }]);
    await observation('meta_inuse', [{ system: T, code: 'obs' }, { code: 'plain' }]);
    const gone = await observation('meta_inuse', [{ system: T, code: 'deleted-only' }]);
    assert.equal((await fhir(p, writer, 'DELETE', `/meta_inuse/Observation/${gone}`)).status, 204);
    const patient = await fhir(p, writer, 'POST', '/meta_inuse/Patient', {
      resourceType: 'Patient',
      meta: { tag: [{ system: T, code: 'pat' }], security: [{ system: CONF, code: 'V' }], profile: [PROFILE] },
    });
    assert.equal(patient.status, 201, patient.text);
    await observation('meta_other', [{ system: T, code: 'other-vault' }]);

    const observations = await inUse('/Observation/$meta');
    assert.deepEqual(codes(observations.tag), ['|plain', `${T}|obs`]);
    assert.equal(observations.security, undefined);
    const vault = await inUse('/$meta');
    assert.deepEqual(codes(vault.tag), ['|plain', `${T}|obs`, `${T}|pat`]);
    assert.deepEqual(codes(vault.security), [`${CONF}|V`]);
    assert.deepEqual(vault.profile, [PROFILE]);
    const events = await auditEvents<{ entity?: { query?: string }[] }>(p, auditor, 'subtype=operation&_count=1000');
    const queries = events.flatMap((e) => (e.entity ?? []).map((x) => Buffer.from(x.query ?? '', 'base64').toString()));
    assert.ok(queries.includes('Observation/$meta'), queries.join());
  });

  test('refusals: the scope, the body, a deleted resource, a version, a token narrowed to queries', async () => {
    const id = await observation('meta', [{ system: T, code: 'a' }]);
    const add = (body: unknown, caller = writer, path = `Observation/${id}`) =>
      fhir(p, caller, 'POST', `/meta/${path}/$meta-add`, body);
    assert.equal((await add(change([{ code: 'x' }]), reader)).status, 403);
    const bad = [
      { resourceType: 'Parameters' },
      { resourceType: 'Parameters', parameter: [{ name: 'meta', valueString: 'x' }] },
      { resourceType: 'Parameters', parameter: [{ name: 'tag', valueCoding: { code: 'x' } }] },
      change(),
      change([{ system: T } as never]),
      { resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: { versionId: '7' } }] },
      { resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: { tag: { code: 'x' } } }] },
      { resourceType: 'Patient' },
    ];
    for (const body of bad) {
      const r = await add(body);
      assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
      assert.equal(r.json.resourceType, 'OperationOutcome');
    }
    assert.equal((await add(change([{ code: 'x' }]), writer, `Observation/${id}/_history/1`)).status, 400);
    assert.equal((await add(change([{ code: 'x' }]), writer, 'Observation/nothing-here')).status, 404);
    assert.equal((await fhir(p, writer, 'DELETE', `/meta/Observation/${id}`)).status, 204);
    assert.equal((await add(change([{ code: 'x' }]))).status, 410);
    assert.equal((await fhir(p, reader, 'GET', `/meta/Observation/${id}/$meta`)).status, 410);
    // The audit trail is the server's: no tags added to it.
    assert.equal((await add(change([{ code: 'x' }]), writer, 'AuditEvent/anything')).status, 403);
    // A token narrowed to a query may not list what is in use in the whole type or vault.
    const narrowed = await grantedClient(p, 'meta-narrow', 'system/Observation.rs?status=final', ['meta']);
    assert.equal((await fhir(p, narrowed, 'GET', '/meta/Observation/$meta')).status, 403);
    assert.equal((await fhir(p, narrowed, 'GET', '/meta/$meta')).status, 403);
  });

  test('fhir-kit-client: $meta-add and $meta as operations on an instance; the CapabilityStatement lists them', async () => {
    setGlobalDispatcher(new Agent({ connect: { ca: p.ca } }));
    const client = new Client({ baseUrl: `${p.fhirBase}/meta`, bearerToken: writer.token });
    const id = await observation('meta', [{ system: T, code: 'a' }]);
    const added = (await client.operation({
      name: '$meta-add',
      resourceType: 'Observation',
      id,
      input: change([{ system: T, code: 'kit' }]),
    })) as Record<string, unknown>;
    assert.deepEqual(codes(metaOf(added).tag), [`${T}|a`, `${T}|kit`]);
    const got = (await client.operation({
      name: '$meta',
      resourceType: 'Observation',
      id,
      method: 'GET',
    })) as Record<string, unknown>;
    assert.equal(metaOf(got).versionId, '2');
    const cs = (await client.capabilityStatement()) as unknown as { rest: { operation: { name: string }[] }[] };
    const names = cs.rest[0]?.operation.map((o) => o.name) ?? [];
    assert.ok(
      ['meta', 'meta-add', 'meta-delete'].every((n) => names.includes(n)),
      names.join(),
    );
  });
});
