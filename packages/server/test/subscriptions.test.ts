import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Caller, fhir, grant, grantedClient, partition, secretClient } from './helpers/fhir.ts';
import { freePort, startPlatform, type TestPlatform } from './helpers/platform.ts';

// R4 Subscriptions (rest-hook): a vault's client subscribes an endpoint the administrator allowed to a search;
// the server notifies it of each matching change, as that client, audited. The receiver is a real HTTP server
// on loopback that can be told to fail.

interface Received {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

const received: Received[] = [];
let failWith: number | undefined;
let receiver: Server;
let hooks: string;
let p: TestPlatform;
let hub: Caller;
let narrow: Caller;

const LOINC = 'http://loinc.org';
const observation = (code: string, value = 80) => ({
  resourceType: 'Observation',
  status: 'final',
  code: { coding: [{ system: LOINC, code }] },
  valueQuantity: { value, unit: '/min' },
});
const subscription = (over: Record<string, unknown> = {}, channel: Record<string, unknown> = {}) => ({
  resourceType: 'Subscription',
  status: 'requested',
  reason: 'test',
  criteria: `Observation?code=${LOINC}|8867-4`,
  channel: {
    type: 'rest-hook',
    endpoint: `${hooks}/fhir`,
    payload: 'application/fhir+json',
    header: ['Authorization: Bearer receiver-secret'],
    ...channel,
  },
  ...over,
});

async function until<T>(what: string, check: () => Promise<T | undefined> | T | undefined, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const statusOf = async (vault: string, id: string) =>
  (await fhir(p, hub, 'GET', `/${vault}/Subscription/${id}`)).json as { status: string; error?: string };
const activeSoon = (vault: string, id: string) =>
  until(`Subscription/${id} active`, async () => ((await statusOf(vault, id)).status === 'active' ? true : undefined));
const at = (path: string) => received.filter((r) => r.url.startsWith(path));
/** Several dispatcher rounds (poll 100 ms): what was not sent by then is not going to be. */
const settle = () => new Promise((r) => setTimeout(r, 800));

before(async () => {
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      received.push({ method: req.method as string, url: req.url as string, headers: req.headers, body });
      res.writeHead(failWith ?? 200).end();
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => receiver.listen(port, '127.0.0.1', resolve));
  hooks = `http://127.0.0.1:${port}/hooks`;
  p = await startPlatform(
    {},
    {
      env: {
        CAREVAULT_SUBSCRIPTION_ENDPOINTS: hooks,
        CAREVAULT_SUBSCRIPTION_POLL_MS: '100',
        CAREVAULT_SUBSCRIPTION_RETRIES: '2',
      },
    },
  );
  await partition(p, 'subs');
  await partition(p, 'other');
  hub = await grantedClient(p, 'hub', 'system/*.cruds', ['subs', 'other']);
  narrow = await grantedClient(p, 'narrow', 'system/Subscription.cruds system/Patient.rs', ['subs']);
});
after(async () => {
  await p.stop();
  receiver.close();
});

describe('Subscription rest-hook', () => {
  test('each matching change is PUT to [endpoint]/[type]/[id] with its headers, in this vault only, audited', async () => {
    const created = await fhir(p, hub, 'POST', '/subs/Subscription', subscription());
    assert.equal(created.status, 201, created.text);
    const id = created.json.id as string;
    await activeSoon('subs', id);

    const a = (await fhir(p, hub, 'POST', '/subs/Observation', observation('8867-4'))).json.id as string;
    const b = (await fhir(p, hub, 'POST', '/subs/Observation', observation('8310-5'))).json.id as string;
    const c = (await fhir(p, hub, 'POST', '/other/Observation', observation('8867-4'))).json.id as string;
    // Changes between two looks of the dispatcher are one notification of the current version: wait for the first.
    await until('a notification', () => (at('/hooks/fhir/').length >= 1 ? true : undefined));
    await fhir(p, hub, 'PUT', `/subs/Observation/${a}`, { ...observation('8867-4', 95), id: a });
    await until('two notifications', () => (at('/hooks/fhir/').length >= 2 ? true : undefined));
    await settle();

    const got = at('/hooks/fhir/');
    assert.deepEqual(
      got.map((r) => [r.method, r.url]),
      [
        ['PUT', `/hooks/fhir/Observation/${a}`],
        ['PUT', `/hooks/fhir/Observation/${a}`],
      ],
    );
    assert.ok(!received.some((r) => r.url.includes(b) || r.url.includes(c)));
    const bodies = got.map(
      (r) => JSON.parse(r.body) as { meta: { versionId: string }; valueQuantity: { value: number } },
    );
    assert.deepEqual(
      bodies.map((o) => [o.meta.versionId, o.valueQuantity.value]),
      [
        ['1', 80],
        ['2', 95],
      ],
    );
    assert.equal(got[0]?.headers.authorization, 'Bearer receiver-secret');
    assert.equal(got[0]?.headers['content-type'], 'application/fhir+json');

    const { events } = await p.store.audit.search({ type: ['110106'], limit: 100, offset: 0 });
    const sent = events
      .map(
        (e) =>
          JSON.parse(e) as {
            outcome: string;
            entity: { what: { reference?: string } }[];
            agent: { who: { identifier: { value: string } } }[];
          },
      )
      .filter((e) => e.entity.some((x) => x.what.reference === `Subscription/${id}`));
    assert.deepEqual(
      sent.map((e) => e.entity.map((x) => x.what.reference).filter((r) => r?.startsWith('Observation'))[0]).sort(),
      [`Observation/${a}/_history/1`, `Observation/${a}/_history/2`],
    );
    assert.ok(sent.every((e) => e.outcome === '0' && e.agent.some((g) => g.who.identifier.value === 'hub')));
    await fhir(p, hub, 'DELETE', `/subs/Subscription/${id}`);
  });

  test('without a payload each change is an empty POST to the endpoint', async () => {
    const created = await fhir(
      p,
      hub,
      'POST',
      '/subs/Subscription',
      subscription({ criteria: 'Patient?family=Jansen' }, { endpoint: `${hooks}/empty`, payload: undefined }),
    );
    assert.equal(created.status, 201, created.text);
    await activeSoon('subs', created.json.id as string);
    await fhir(p, hub, 'POST', '/subs/Patient', { resourceType: 'Patient', name: [{ family: 'Jansen' }] });
    await fhir(p, hub, 'POST', '/subs/Patient', { resourceType: 'Patient', name: [{ family: 'Bakker' }] });
    await until('a notification', () => (at('/hooks/empty').length >= 1 ? true : undefined));
    await settle();
    assert.deepEqual(
      at('/hooks/empty').map((r) => [r.method, r.url, r.body, r.headers['content-type']]),
      [['POST', '/hooks/empty', '', undefined]],
    );
    await fhir(p, hub, 'DELETE', `/subs/Subscription/${created.json.id}`);
  });

  test('a deleted Subscription sends nothing and leaves no records; created again under its id, it starts afresh', async () => {
    const rate = (value: number) => ({ ...observation('9279-1', value) });
    const put = () =>
      fhir(
        p,
        hub,
        'PUT',
        '/subs/Subscription/again',
        subscription({ id: 'again', criteria: `Observation?code=${LOINC}|9279-1` }, { endpoint: `${hooks}/again` }),
      );
    assert.equal((await put()).status, 201);
    await activeSoon('subs', 'again');
    const first = (await fhir(p, hub, 'POST', '/subs/Observation', rate(12))).json.id as string;
    await until('a notification', () => (at('/hooks/again/').length >= 1 ? true : undefined));
    assert.equal((await fhir(p, hub, 'DELETE', '/subs/Subscription/again')).status, 204);
    assert.equal(await p.store.meta.get('subscription-owner:subs/again'), undefined);
    assert.equal(await p.store.meta.get('subscription-state:subs/again'), undefined);
    const meanwhile = (await fhir(p, hub, 'POST', '/subs/Observation', rate(14))).json.id as string;
    await settle();
    assert.equal(at('/hooks/again/').length, 1);

    assert.equal((await put()).status, 201);
    await activeSoon('subs', 'again');
    const later = (await fhir(p, hub, 'POST', '/subs/Observation', rate(16))).json.id as string;
    await until('a second notification', () => (at('/hooks/again/').length >= 2 ? true : undefined));
    await settle();
    assert.deepEqual(
      at('/hooks/again/').map((r) => r.url),
      [`/hooks/again/Observation/${first}`, `/hooks/again/Observation/${later}`],
      `not ${meanwhile}, written while it was deleted`,
    );
    await fhir(p, hub, 'DELETE', '/subs/Subscription/again');
  });

  test('what the server cannot or may not serve is refused when written', async () => {
    const refused = async (body: unknown, status: number, says: RegExp, caller = hub) => {
      const res = await fhir(p, caller, 'POST', '/subs/Subscription', body);
      assert.equal(res.status, status, res.text);
      assert.match(res.text, says);
    };
    await refused(
      subscription({}, { endpoint: 'http://127.0.0.1:1/elsewhere' }),
      422,
      /CAREVAULT_SUBSCRIPTION_ENDPOINTS/,
    );
    await refused(subscription({}, { endpoint: `${hooks}evil/fhir` }), 422, /not under an endpoint/);
    await refused(
      subscription({}, { endpoint: `${hooks.replace('http://', 'http://u:pw@')}/fhir` }),
      422,
      /credentials/,
    );
    await refused(subscription({}, { type: 'email', endpoint: 'mailto:a@b.nl' }), 422, /rest-hook only/);
    await refused(subscription({}, { payload: 'application/fhir+xml' }), 422, /application\/fhir\+json/);
    await refused(subscription({}, { header: ['Host: evil.example'] }), 422, /host is set by the server/);
    await refused(subscription({}, { header: ['X-A: b\r\nX-Injected: c'] }), 422, /header\[0\] is not a /);
    await refused(subscription({ criteria: 'Observation?_sort=date' }), 422, /_sort has no place/);
    await refused(subscription({ criteria: 'Observation?nope=1' }), 422, /criteria: /);
    await refused(subscription({ criteria: 'Nothing?x=1' }), 422, /Nothing is not a resource type/);
    await refused(subscription({ status: 'paused' }), 422, /not a valid code for Subscription.status/);
    // A client may subscribe only to what it may search itself.
    await refused(subscription(), 403, /criteria: .*search-type of Observation/, narrow);
    // Nor through a chain: notifications would tell which Patients have such Observations.
    await refused(
      subscription({ criteria: 'Patient?_has:Observation:subject:status=final' }),
      403,
      /_has:Observation:subject searches Observation/,
      narrow,
    );
    const patients = await fhir(p, narrow, 'POST', '/subs/Subscription', subscription({ criteria: 'Patient' }));
    assert.equal(patients.status, 201, patients.text);
    await fhir(p, hub, 'DELETE', `/subs/Subscription/${patients.json.id}`);
    // Every write path: a patch to an endpoint not allowed, and a transaction with such a Subscription in it.
    const kept = await fhir(p, hub, 'POST', '/subs/Subscription', subscription({}, { endpoint: `${hooks}/kept` }));
    const patched = await fhir(
      p,
      hub,
      'PATCH',
      `/subs/Subscription/${kept.json.id}`,
      [{ op: 'replace', path: '/channel/endpoint', value: 'http://127.0.0.1:1/elsewhere' }],
      { 'content-type': 'application/json-patch+json' },
    );
    assert.equal(patched.status, 422, patched.text);
    assert.equal(
      ((await fhir(p, hub, 'GET', `/subs/Subscription/${kept.json.id}`)).json.channel as { endpoint: string }).endpoint,
      `${hooks}/kept`,
    );
    await fhir(p, hub, 'DELETE', `/subs/Subscription/${kept.json.id}`);
    const bundle = await fhir(p, hub, 'POST', '/subs', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          resource: { resourceType: 'Patient', name: [{ family: 'Transactie' }] },
          request: { method: 'POST', url: 'Patient' },
        },
        {
          resource: subscription({}, { endpoint: 'http://127.0.0.1:1/elsewhere' }),
          request: { method: 'POST', url: 'Subscription' },
        },
      ],
    });
    assert.equal(bundle.status, 422, bundle.text);
    assert.equal((await fhir(p, hub, 'GET', '/subs/Patient?family=Transactie&_total=accurate')).json.total, 0);
    // Nothing refused was stored.
    const stored = await fhir(p, hub, 'GET', '/subs/Subscription?_total=accurate');
    assert.equal(stored.json.total, 0);
  });

  test('a failing endpoint is tried again, then the Subscription is in error; requested again, nothing is lost', async () => {
    failWith = 503;
    const created = await fhir(p, hub, 'POST', '/subs/Subscription', subscription({}, { endpoint: `${hooks}/flaky` }));
    const id = created.json.id as string;
    await activeSoon('subs', id);
    const first = (await fhir(p, hub, 'POST', '/subs/Observation', observation('8867-4', 101))).json.id as string;
    // One attempt and two retries (CAREVAULT_SUBSCRIPTION_RETRIES=2), a second and two seconds apart.
    const failed = await until('error', async () => {
      const s = await statusOf('subs', id);
      return s.status === 'error' ? s : undefined;
    });
    assert.equal(failed.error, 'the endpoint answered 503, 3 attempts in a row');
    assert.equal(at('/hooks/flaky/').length, 3);
    const { events } = await p.store.audit.search({ type: ['110106'], outcome: ['8'], limit: 100, offset: 0 });
    assert.equal(events.filter((e) => e.includes(`Observation/${first}/`)).length, 3);

    failWith = undefined;
    const second = (await fhir(p, hub, 'POST', '/subs/Observation', observation('8867-4', 102))).json.id as string;
    await settle();
    assert.equal(at('/hooks/flaky/').length, 3, 'a Subscription in error sends nothing');
    const current = (await fhir(p, hub, 'GET', `/subs/Subscription/${id}`)).json;
    const again = await fhir(p, hub, 'PUT', `/subs/Subscription/${id}`, {
      ...current,
      status: 'requested',
      error: undefined,
    });
    assert.equal(again.status, 200, again.text);
    await until('both', () => (at('/hooks/flaky/').length >= 5 ? true : undefined));
    assert.deepEqual(
      at('/hooks/flaky/')
        .slice(3)
        .map((r) => r.url),
      [`/hooks/flaky/Observation/${first}`, `/hooks/flaky/Observation/${second}`],
    );
    assert.equal((await statusOf('subs', id)).status, 'active');
    await fhir(p, hub, 'DELETE', `/subs/Subscription/${id}`);
  });

  test("a writer's granular scope narrows what it is notified of, as it narrows its searches", async () => {
    // The vault grants Observations; the token asks for the heart rates only.
    const scoped = await secretClient(
      p,
      'heart-only',
      `system/Subscription.cruds system/Observation.rs?code=${LOINC}|8867-4`,
    );
    await grant(p, {
      partition: 'subs',
      client: 'heart-only',
      scope: 'system/Subscription.cruds system/Observation.rs',
    });
    const created = await fhir(
      p,
      scoped,
      'POST',
      '/subs/Subscription',
      subscription({ criteria: 'Observation' }, { endpoint: `${hooks}/scoped` }),
    );
    assert.equal(created.status, 201, created.text);
    await activeSoon('subs', created.json.id as string);
    const other = (await fhir(p, hub, 'POST', '/subs/Observation', observation('8310-5'))).json.id as string;
    const heart = (await fhir(p, hub, 'POST', '/subs/Observation', observation('8867-4'))).json.id as string;
    await until('the heart rate', () => (at('/hooks/scoped/').length >= 1 ? true : undefined));
    await settle();
    assert.deepEqual(
      at('/hooks/scoped/').map((r) => r.url),
      [`/hooks/scoped/Observation/${heart}`],
    );
    assert.ok(!received.some((r) => r.url.includes(other)));
    await fhir(p, hub, 'DELETE', `/subs/Subscription/${created.json.id}`);
  });

  test('a disabled writer ends its Subscriptions', async () => {
    const writer = await grantedClient(p, 'writer', 'system/*.cruds', ['subs']);
    const created = await fhir(
      p,
      writer,
      'POST',
      '/subs/Subscription',
      subscription({}, { endpoint: `${hooks}/gone` }),
    );
    const id = created.json.id as string;
    await activeSoon('subs', id);
    await p.store.clients.setDisabled('writer', true);
    await fhir(p, hub, 'POST', '/subs/Observation', observation('8867-4', 103));
    const ended = await until('error', async () => {
      const s = await statusOf('subs', id);
      return s.status === 'error' ? s : undefined;
    });
    assert.equal(ended.error, 'the client writer that wrote it is disabled or removed');
    assert.equal(at('/hooks/gone').length, 0);
  });
});

describe('two nodes on one data directory', () => {
  let second: TestPlatform;
  before(async () => {
    second = await startPlatform(
      {},
      { nodeOf: p, env: { CAREVAULT_SUBSCRIPTION_ENDPOINTS: hooks, CAREVAULT_SUBSCRIPTION_POLL_MS: '100' } },
    );
  });
  after(async () => {
    await second.stop();
  });

  test('one of them notifies each change, once', async () => {
    const created = await fhir(p, hub, 'POST', '/subs/Subscription', subscription({}, { endpoint: `${hooks}/once` }));
    await activeSoon('subs', created.json.id as string);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const via = i % 2 === 0 ? p : second;
      ids.push((await fhir(via, hub, 'POST', '/subs/Observation', observation('8867-4', i))).json.id as string);
    }
    await until('ten', () => (at('/hooks/once/').length >= 10 ? true : undefined));
    await settle();
    assert.deepEqual(
      at('/hooks/once/').map((r) => r.url),
      ids.map((id) => `/hooks/once/Observation/${id}`),
    );
  });
});

describe('a rest-hook into another carevault', () => {
  let source: TestPlatform;
  let target: TestPlatform;
  let writer: Caller;
  let copier: Caller;
  before(async () => {
    target = await startPlatform();
    await partition(target, 'copy');
    copier = await grantedClient(target, 'copier', 'system/Observation.cru', ['copy']);
    source = await startPlatform(
      {},
      {
        env: {
          CAREVAULT_SUBSCRIPTION_ENDPOINTS: `${target.fhirBase}/copy`,
          CAREVAULT_SUBSCRIPTION_POLL_MS: '100',
          CAREVAULT_OUTBOUND_CA: join(target.dataDir, 'pki', 'ca.pem'),
        },
      },
    );
    await partition(source, 'ehr');
    writer = await grantedClient(source, 'ehr-app', 'system/*.cruds', ['ehr']);
  });
  after(async () => {
    await source.stop();
    await target.stop();
  });

  test("each matching Observation is updated into the other server's vault by its id, as that server's client", async () => {
    const sub = await fhir(
      source,
      writer,
      'POST',
      '/ehr/Subscription',
      subscription({}, { endpoint: `${target.fhirBase}/copy`, header: [`Authorization: Bearer ${copier.token}`] }),
    );
    assert.equal(sub.status, 201, sub.text);
    const made = await fhir(source, writer, 'POST', '/ehr/Observation', observation('8867-4', 72));
    const other = await fhir(source, writer, 'POST', '/ehr/Observation', observation('8310-5'));
    const id = made.json.id as string;
    const copied = await until('the copy', async () => {
      const r = await fhir(target, copier, 'GET', `/copy/Observation/${id}`);
      return r.status === 200 ? r.json : undefined;
    });
    assert.deepEqual((copied as { valueQuantity: unknown }).valueQuantity, { value: 72, unit: '/min' });
    await settle();
    assert.equal((await fhir(target, copier, 'GET', `/copy/Observation/${other.json.id}`)).status, 404);
  });
});
