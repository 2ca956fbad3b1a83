import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  AccountNotFoundError,
  AimClient,
  type Bundle,
  ConfigurationError,
  changesSince,
  FhirClient,
  FhirResponseError,
  isSafeToRepeat,
  partitionOf,
  type Resource,
  ResponseTooLargeError,
  TokenManager,
  TransportError,
} from '../src/index.ts';
import { type ClosableFetch, tlsFetch } from '../src/node.ts';
import { type Cara, CLIENT_ID, startCara } from './helpers/cara.ts';

// The SDK FhirClient against a real carevault, with the quirks real EHRs have injected by the loopback proxy
// in front of it, so the client is not tuned to carevault alone (issue 10 §1).
let cara: Cara;
let fetch: ClosableFetch;
let tokens: TokenManager;
let fhir: FhirClient;
const fast = { baseDelayMs: 10, maxDelayMs: 2000, maxAttempts: 5 };

before(async () => {
  cara = await startCara();
  fetch = tlsFetch({ ca: cara.ca, cert: cara.cert, key: cara.key });
  tokens = new TokenManager({ issuer: cara.issuer, clientId: CLIENT_ID, auth: { method: 'tls_client_auth' }, fetch });
  fhir = new FhirClient({ baseUrl: `${cara.issuer}/fhir/alice_1234`, tokens, fetch, retry: fast });
});
after(async () => {
  await fetch.close();
  await cara.stop();
});
const reset = () => {
  cara.proxy.fault = () => ({ kind: 'pass' });
  cara.proxy.requireAccept = false;
  cara.proxy.linkOrigin = undefined;
};
const fhirRequests = (from: number) => cara.proxy.seen.slice(from).filter((s) => s.url.startsWith('/fhir/'));

describe('REST interactions', () => {
  test('create, read, vread, update, patch, history, conditional create, delete', async () => {
    const created = await fhir.create({ resourceType: 'Patient', name: [{ family: 'Client' }] });
    assert.ok(created.id);
    const read = await fhir.read('Patient', created.id as string);
    assert.deepEqual(read.name, [{ family: 'Client' }]);
    const updated = await fhir.update({ ...read, gender: 'female' }, { ifMatch: `W/"${read.meta?.versionId}"` });
    assert.equal(updated.meta?.versionId, '2');
    assert.equal((await fhir.vread('Patient', created.id as string, '1')).gender, undefined);
    const patched = await fhir.patch('Patient', created.id as string, [
      { op: 'replace', path: '/gender', value: 'male' },
    ]);
    assert.equal(patched.gender, 'male');
    const fhirPathPatched = await fhir.patch('Patient', created.id as string, {
      resourceType: 'Parameters',
      parameter: [
        {
          name: 'operation',
          part: [
            { name: 'type', valueCode: 'replace' },
            { name: 'path', valueString: 'Patient.gender' },
            { name: 'value', valueCode: 'other' },
          ],
        },
      ],
    });
    assert.equal(fhirPathPatched.gender, 'other');
    const history = await fhir.history('Patient', created.id as string);
    assert.equal(history.entry?.length, 4);
    const c1 = await fhir.create(
      { resourceType: 'Patient', identifier: [{ system: 'urn:x', value: 'cc-1' }] },
      { ifNoneExist: 'identifier=urn:x|cc-1' },
    );
    const c2 = await fhir.create(
      { resourceType: 'Patient', identifier: [{ system: 'urn:x', value: 'cc-1' }] },
      { ifNoneExist: 'identifier=urn:x|cc-1' },
    );
    assert.equal(c1.id, c2.id, 'conditional create matched');
    // Conditional update: creates when nothing matches, updates the one match afterwards.
    const cu1 = await fhir.conditionalUpdate(
      { resourceType: 'Patient', identifier: [{ system: 'urn:x', value: 'cu-1' }], gender: 'other' },
      { identifier: 'urn:x|cu-1' },
    );
    const cu2 = await fhir.conditionalUpdate(
      { resourceType: 'Patient', identifier: [{ system: 'urn:x', value: 'cu-1' }], gender: 'unknown' },
      { identifier: 'urn:x|cu-1' },
    );
    assert.equal(cu2.id, cu1.id);
    assert.equal(cu2.meta?.versionId, '2');
    assert.equal((await fhir.read('Patient', cu1.id as string)).gender, 'unknown');
    await fhir.delete('Patient', created.id as string);
    await assert.rejects(fhir.read('Patient', created.id as string), (err: FhirResponseError) => {
      assert.equal(err.status, 410);
      return true;
    });
  });

  test('refresh(): unchanged is the held copy (304, no body); changed is the new version; deleted is 410', async () => {
    const held = await fhir.create({ resourceType: 'Observation', status: 'final', code: { text: 'refresh me' } });
    const from = cara.proxy.seen.length;
    assert.equal(await fhir.refresh(held), held, 'the very object held: the server sent no body');
    assert.equal(fhirRequests(from)[0]?.headers['if-none-match'], `W/"${held.meta?.versionId}"`);
    const newer = await fhir.update({ ...held, status: 'amended' });
    const refreshed = await fhir.refresh(held);
    assert.notEqual(refreshed, held);
    assert.deepEqual([refreshed.meta?.versionId, refreshed.status], [newer.meta?.versionId, 'amended']);
    // Without a version there is nothing to compare: a plain read.
    const { meta: _, ...unversioned } = held;
    const before = cara.proxy.seen.length;
    assert.equal((await fhir.refresh(unversioned)).status, 'amended');
    assert.equal(fhirRequests(before)[0]?.headers['if-none-match'], undefined);
    await fhir.delete('Observation', held.id as string);
    await assert.rejects(
      fhir.refresh(refreshed),
      (err: unknown) => err instanceof FhirResponseError && err.status === 410,
    );
    await assert.rejects(fhir.refresh({ resourceType: 'Observation' }), ConfigurationError);
  });

  test('errors keep the status, the issue codes and the diagnostics', async () => {
    await assert.rejects(fhir.read('Patient', 'does-not-exist'), (err: unknown) => {
      assert.ok(err instanceof FhirResponseError);
      assert.equal(err.status, 404);
      assert.deepEqual(err.codes, ['not-found']);
      assert.match(err.issues[0]?.diagnostics ?? '', /not found/);
      return true;
    });
    await assert.rejects(fhir.create({ resourceType: 'Patient', gender: 'nonsense' }), (err: FhirResponseError) => {
      assert.equal(err.status, 422);
      assert.ok(err.issues[0]?.expression?.some((e) => e.includes('gender')));
      return true;
    });
  });

  test('transaction and batch Bundles, and an operation', async () => {
    const tx = await fhir.transaction([
      {
        fullUrl: 'urn:uuid:5b8f7a54-1c1e-4d9e-9d51-7a0c3c6e1a01',
        resource: { resourceType: 'Patient' },
        request: { method: 'POST', url: 'Patient' },
      },
      {
        resource: {
          resourceType: 'Observation',
          status: 'final',
          code: { text: 'x' },
          subject: { reference: 'urn:uuid:5b8f7a54-1c1e-4d9e-9d51-7a0c3c6e1a01' },
        },
        request: { method: 'POST', url: 'Observation' },
      },
    ]);
    assert.deepEqual(
      tx.entry?.map((e) => e.response?.status.split(' ')[0]),
      ['201', '201'],
    );
    const capability = await fhir.body<Resource>('GET', 'metadata');
    assert.equal(capability.resourceType, 'CapabilityStatement');
    const req = await fhir
      .operation<Resource>('data-requirements', { type: 'Measure', id: 'nope' })
      .catch((e: FhirResponseError) => e);
    assert.ok(req instanceof FhirResponseError && req.status === 404);
  });
});

describe('paging', () => {
  test('validate() asks $validate: problems come as error issues, not as a thrown error', async () => {
    const fine = await fhir.validate({ resourceType: 'Observation', status: 'final', code: { text: 'pulse' } });
    assert.deepEqual(
      fine.issue.map((i) => i.severity),
      ['information'],
    );
    const bad = await fhir.validate(
      { resourceType: 'Observation', id: 'v-1', status: 'finalized', code: { text: 'pulse' } },
      { mode: 'update' },
    );
    assert.deepEqual(
      bad.issue.map((i) => [i.severity, i.expression?.[0]]),
      [['error', 'Observation.status']],
    );
    assert.ok(cara.proxy.seen.some((s) => s.url.endsWith('/fhir/alice_1234/Observation/v-1/$validate?mode=update')));
    assert.throws(() => fhir.validate({ resourceType: 'Observation' }, { mode: 'update' }), /needs resource.id/);
    // A profile the vault does not hold cannot be validated against: that is an error, not an answer.
    const profile = 'http://example.org/StructureDefinition/absent';
    await assert.rejects(
      fhir.validate({ resourceType: 'Observation', status: 'final', code: { text: 'pulse' } }, { profile }),
      (err: unknown) =>
        err instanceof FhirResponseError && err.status === 400 && /no StructureDefinition/.test(err.message),
    );
    assert.ok(
      cara.proxy.seen.some((s) => s.url.endsWith(`/Observation/$validate?profile=${encodeURIComponent(profile)}`)),
    );
  });

  test('pages() follows next links; searchAll yields every match once', async () => {
    const total = (await fhir.search('Observation', { _summary: 'count' })).total as number;
    assert.ok(total > 10);
    let pages = 0;
    for await (const _page of fhir.pages('Observation', { _count: 4 })) pages++;
    assert.equal(pages, Math.ceil(total / 4));
    const ids = new Set<string>();
    for await (const o of fhir.searchAll('Observation', { _count: 7 })) ids.add(o.id as string);
    assert.equal(ids.size, total);
  });

  test("everything() pages through a patient's $everything: the patient first, each resource once", async () => {
    const patient = (await fhir.search('Patient', { _count: 1 })).entry?.[0]?.resource as Resource;
    const matches: string[] = [];
    let pages = 0;
    for await (const page of fhir.everything(patient.id as string, { _count: 5 })) {
      pages++;
      for (const e of page.entry ?? [])
        if (e.search?.mode === 'match') matches.push(`${e.resource?.resourceType}/${e.resource?.id}`);
    }
    assert.equal(matches[0], `Patient/${patient.id}`);
    assert.equal(new Set(matches).size, matches.length);
    assert.equal(pages, Math.ceil(matches.length / 5));
    const observations: string[] = [];
    for await (const o of fhir.searchAll('Observation', { subject: `Patient/${patient.id}` }))
      observations.push(`Observation/${o.id}`);
    assert.ok(observations.length > 0);
    assert.deepEqual(matches.filter((m) => m.startsWith('Observation/')).sort(), observations.sort());
  });

  test('next links on an internal host name are followed on the configured origin (the token never leaves it)', async () => {
    cara.proxy.linkOrigin = 'https://ehr-internal.invalid:9443';
    const from = cara.proxy.seen.length;
    try {
      const ids = new Set<string>();
      for await (const o of fhir.searchAll('Observation', { _count: 4 })) ids.add(o.id as string);
      assert.equal(ids.size, (await fhir.search('Observation', { _summary: 'count' })).total);
      assert.ok(fhirRequests(from).length > 3, 'every page came through the configured origin');
    } finally {
      reset();
    }
  });
});

describe('EHR quirks and faults', () => {
  test('every request has an explicit Accept, so a server that refuses requests without one (Cerner) answers', async () => {
    cara.proxy.requireAccept = true;
    try {
      const raw = await fetch(`${cara.issuer}/fhir/alice_1234/Patient?_count=1`, {
        headers: { authorization: `Bearer ${await tokens.getToken()}`, accept: '' },
      });
      assert.equal(raw.status, 406, 'the quirk is on');
      const page = await fhir.search('Patient', { _count: 1 });
      assert.equal(page.resourceType, 'Bundle');
    } finally {
      reset();
    }
  });

  test('401 invalid_token after a token rotation: renewed once, the request repeated', async () => {
    await fhir.search('Patient', { _count: 1 });
    const before = await tokens.getToken();
    cara.proxy.rotateTokens();
    const from = cara.proxy.seen.length;
    const page = await fhir.search('Patient', { _count: 1 });
    assert.equal(page.resourceType, 'Bundle');
    assert.notEqual(await tokens.getToken(), before, 'a new token was fetched');
    const seen = cara.proxy.seen.slice(from).map((s) => `${s.method} ${s.url.split('?')[0]}`);
    assert.deepEqual(seen, ['GET /fhir/alice_1234/Patient', 'POST /oauth/token', 'GET /fhir/alice_1234/Patient']);
  });

  test('429 with Retry-After is honoured; 503 and dropped connections are retried with the same X-Request-Id', async () => {
    const from = cara.proxy.seen.length;
    cara.proxy.fault = (_req, n) =>
      n === from
        ? { kind: 'status', status: 429, retryAfter: 1 }
        : n === from + 1
          ? { kind: 'status', status: 503 }
          : n === from + 2
            ? { kind: 'drop' }
            : { kind: 'pass' };
    try {
      const started = Date.now();
      const page = await fhir.search('Patient', { _count: 1 });
      assert.equal(page.resourceType, 'Bundle');
      assert.ok(Date.now() - started >= 1000, 'waited for Retry-After');
      const attempts = fhirRequests(from);
      assert.equal(attempts.length, 4);
      const ids = new Set(attempts.map((a) => a.headers['x-request-id']));
      assert.equal(ids.size, 1, 'one logical request, one X-Request-Id');
      assert.match([...ids][0] as string, /^[A-Za-z0-9_-]{12}$/);
      assert.equal(new Set(attempts.map((a) => a.headers['x-correlation-id'])).size, 1);
      assert.equal(attempts[0]?.headers['x-correlation-id'], fhir.correlationId);
    } finally {
      reset();
    }
  });

  test('a plain POST create is never repeated; a conditional create and a batch of PUTs are', async () => {
    cara.proxy.fault = (req) => (req.method === 'POST' ? { kind: 'status', status: 503 } : { kind: 'pass' });
    const from = cara.proxy.seen.length;
    try {
      await assert.rejects(fhir.create({ resourceType: 'Patient' }), (err: FhirResponseError) => err.status === 503);
      assert.equal(fhirRequests(from).length, 1, 'not retried: it might have been written');
      let n = 0;
      cara.proxy.fault = (req) =>
        req.method === 'POST' && n++ < 2 ? { kind: 'status', status: 503 } : { kind: 'pass' };
      const c = await fhir.create(
        { resourceType: 'Patient', identifier: [{ system: 'urn:x', value: 'retry-1' }] },
        { ifNoneExist: 'identifier=urn:x|retry-1' },
      );
      assert.ok(c.id);
      n = 0;
      const b = await fhir.batch([
        {
          resource: { resourceType: 'Patient', id: 'put-retry' },
          request: { method: 'PUT', url: 'Patient/put-retry' },
        },
      ]);
      assert.match(b.entry?.[0]?.response?.status ?? '', /^20[01]/);
    } finally {
      reset();
    }
    assert.equal(
      isSafeToRepeat('POST', {
        resourceType: 'Bundle',
        type: 'batch',
        entry: [{ request: { method: 'POST', url: 'Patient' } }],
      }),
      false,
    );
    assert.equal(isSafeToRepeat('PATCH', []), false);
  });

  test('retries are bounded; per-request timeouts and AbortSignal end a request', async () => {
    cara.proxy.fault = () => ({ kind: 'status', status: 503 });
    const from = cara.proxy.seen.length;
    try {
      await assert.rejects(fhir.read('Patient', 'put-retry'), (err: FhirResponseError) => err.status === 503);
      assert.equal(fhirRequests(from).length, fast.maxAttempts);
    } finally {
      reset();
    }
    cara.proxy.fault = () => ({ kind: 'delay', ms: 1500 });
    try {
      const slow = new FhirClient({
        baseUrl: `${cara.issuer}/fhir/alice_1234`,
        tokens,
        fetch,
        timeoutMs: 200,
        retry: { ...fast, maxAttempts: 2 },
      });
      await assert.rejects(
        slow.read('Patient', 'put-retry'),
        (err: unknown) => err instanceof TransportError && /timeout/.test(err.message),
      );
      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error('caller gave up')), 100);
      const started = Date.now();
      await assert.rejects(fhir.read('Patient', 'put-retry', { signal: controller.signal }), /caller gave up/);
      assert.ok(Date.now() - started < 1000);
    } finally {
      reset();
    }
  });

  test('an answer past maxResponseBytes is refused as it arrives, not retried, and its connection given up', async () => {
    const small = new FhirClient({
      baseUrl: `${cara.issuer}/fhir/alice_1234`,
      tokens,
      fetch,
      retry: fast,
      maxResponseBytes: 1024 * 1024,
    });
    const within = await small.search('Patient', { _count: 5 });
    assert.equal(within.resourceType, 'Bundle');
    for (const declared of [undefined, 10 * 1024 ** 3]) {
      cara.proxy.fault = () => ({ kind: 'flood', status: 200, ...(declared ? { declared } : {}) });
      const from = cara.proxy.seen.length;
      const { closed, bytes } = cara.proxy.flooded;
      try {
        await assert.rejects(
          small.search('Patient'),
          (err: unknown) =>
            err instanceof ResponseTooLargeError &&
            err.maxBytes === 1024 * 1024 &&
            /more than the 1048576 bytes/.test(err.message),
        );
        assert.equal(fhirRequests(from).length, 1, 'not retried');
        // The client closed the connection instead of reading on.
        for (let i = 0; i < 100 && cara.proxy.flooded.closed === closed; i++)
          await new Promise((r) => setTimeout(r, 20));
        assert.equal(cara.proxy.flooded.closed, closed + 1);
        assert.ok(cara.proxy.flooded.bytes - bytes < 16 * 1024 * 1024, 'given up near the limit');
      } finally {
        reset();
      }
    }
    // An error status with an endless body: the error, without the outcome it could not read.
    cara.proxy.fault = () => ({ kind: 'flood', status: 400 });
    try {
      await assert.rejects(
        fhir.read('Patient', 'flooded'),
        (err: unknown) => err instanceof FhirResponseError && err.status === 400 && err.outcome === undefined,
      );
    } finally {
      reset();
    }
  });

  test('a token endpoint that answers without end is an error, not a process out of memory', async () => {
    cara.proxy.fault = (req) =>
      req.url.startsWith('/oauth/token') ? { kind: 'flood', status: 200 } : { kind: 'pass' };
    try {
      const flooded = new TokenManager({
        issuer: cara.issuer,
        clientId: CLIENT_ID,
        auth: { method: 'tls_client_auth' },
        fetch,
        maxRetries: 0,
      });
      await assert.rejects(flooded.getToken(), /more than the 1048576 bytes/);
    } finally {
      reset();
    }
  });

  test('the headers hook adds per-request headers (user context) to every attempt', async () => {
    const withContext = new FhirClient({
      baseUrl: `${cara.issuer}/fhir/alice_1234`,
      tokens,
      fetch,
      correlationId: 'zv-session-01',
      headers: ({ attempt }) => ({ 'x-zv-subject-id': 'dr-who', 'x-attempt': String(attempt) }),
    });
    const from = cara.proxy.seen.length;
    await withContext.search('Patient', { _count: 1 });
    const [seen] = fhirRequests(from);
    assert.equal(seen?.headers['x-zv-subject-id'], 'dr-who');
    assert.equal(seen?.headers['x-correlation-id'], 'zv-session-01');
    assert.equal(seen?.headers.accept, 'application/fhir+json');
  });
});

describe('requests that cannot be sent', () => {
  test('a header value with a line break fails at once, not retried as if the network had failed', async () => {
    const retries: string[] = [];
    const client = new FhirClient({
      baseUrl: `${cara.issuer}/fhir/alice_1234`,
      tokens,
      fetch,
      retry: fast,
      onRetry: (r) => retries.push(r.reason),
    });
    const from = cara.proxy.seen.length;
    await assert.rejects(
      client.read('Patient', 'put-retry', { headers: { 'x-zv-subject-name': 'A. Arts\r\nX-Injected: 1' } }),
      (err: unknown) => err instanceof ConfigurationError && /cannot be sent/.test(err.message),
    );
    assert.deepEqual(retries, []);
    assert.equal(fhirRequests(from).length, 0, 'nothing reached the server');
  });
});

describe('against a server that is not carevault-shaped', () => {
  test('changesSince: what changed since an instant, each resource once in its newest state, resumable', async () => {
    const pause = () => new Promise((resolve) => setTimeout(resolve, 5));
    const all = async <T>(it: AsyncIterable<T>) => {
      const out: T[] = [];
      for await (const x of it) out.push(x);
      return out;
    };
    const a = await fhir.create({ resourceType: 'Patient', name: [{ family: 'ChangeA' }] });
    const b = await fhir.create({ resourceType: 'Patient', name: [{ family: 'ChangeB' }] });
    await pause();
    const since = new Date();
    await pause();
    const a2 = await fhir.update({ ...a, gender: 'female' });
    const a3 = await fhir.update({ ...a2, gender: 'male' });
    await fhir.delete('Patient', b.id as string);
    const c = await fhir.create({ resourceType: 'Observation', status: 'final', code: { text: 'changes' } });
    // Pages of two versions: five versions since, three resources.
    const changes = await all(changesSince(fhir, since, { count: 2 }));
    assert.deepEqual(
      changes.map((x) => `${x.type}/${x.id} v${x.version}${x.deleted ? ' deleted' : ''}`).sort(),
      [`Observation/${c.id} v1`, `Patient/${a.id} v3`, `Patient/${b.id} v2 deleted`].sort(),
    );
    assert.equal(changes.find((x) => x.id === a.id)?.resource?.gender, 'male');
    assert.equal(changes.find((x) => x.id === b.id)?.resource, undefined);
    assert.equal(a3.meta?.versionId, '3');
    assert.deepEqual(
      (await all(changesSince(fhir, since, { types: ['Observation'] }))).map((x) => x.id),
      [c.id],
    );
    // Resumed from the newest lastUpdated it saw: the next change, and at most what it already has again.
    const resume = changes
      .map((x) => x.lastUpdated as string)
      .sort()
      .at(-1) as string;
    const c2 = await fhir.update({ ...c, status: 'amended' });
    const next = await all(changesSince(fhir, resume));
    assert.ok(next.some((x) => x.id === c.id && x.version === c2.meta?.versionId));
    for (const x of next.filter((x) => x.id !== c.id)) {
      const had = changes.find((y) => y.id === x.id);
      assert.equal(x.lastUpdated, resume);
      assert.equal(x.version, had?.version, 'only a change it has already, at the same version');
    }
    await assert.rejects(all(changesSince(fhir, 'yesterday')), /since must be an instant/);
    await assert.rejects(all(changesSince(fhir, since, { types: ['Patient/x?'] })), /is not a resource type/);
  });

  test('absolute next links on the same origin and empty searchsets without entry work', async () => {
    const empty = (await fhir.search('Patient', { identifier: 'urn:none|none' })) as Bundle;
    assert.equal(empty.entry, undefined);
    const all: Resource[] = [];
    for await (const r of fhir.searchAll('Patient', { identifier: 'urn:none|none' })) all.push(r);
    assert.deepEqual(all, []);
  });
});

describe('AimClient', () => {
  test('CARA query API and PIXm agree; unknown ids are AccountNotFoundError; partitionOf checks its input', async () => {
    const aim = new AimClient({ baseUrl: cara.issuer, tokens, fetch });
    const mpi = 'urn:cara:mpi_id:2.16.756.5.30.1.127.3.10.3/0d7c8f1e-2b3a-4c5d-8e9f-0a1b2c3d4e5f';
    assert.equal(await aim.accountUrn(mpi), 'urn:cara:account:alice_1234');
    assert.equal(await aim.accountUrnViaPix(mpi), 'urn:cara:account:alice_1234');
    const unknown = 'urn:cara:mpi_id:2.16.756.5.30.1.127.3.10.3/00000000-0000-4000-8000-000000000000';
    await assert.rejects(aim.accountUrn(unknown), AccountNotFoundError);
    await assert.rejects(aim.accountUrnViaPix(unknown), AccountNotFoundError);
    await assert.rejects(aim.accountUrn('urn:cara:mpi_id:nonsense'), /not an MPI id/);
    assert.equal(partitionOf('urn:cara:account:alice_1234'), 'alice_1234');
    for (const bad of ['urn:cara:account:', 'urn:other:account:x', 'alice_1234', 'urn:cara:account:../x']) {
      assert.throws(() => partitionOf(bad), /not an Account URN/);
    }
  });
});
