import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { connect } from 'node:tls';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { type Agent, fetch } from 'undici';
import { createCa, issueLeaf } from '../src/pki/x509.ts';
import { type Caller, fhir, grant, partition, secretClient, tokenWithSecret } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// Hostile or malformed requests: each answered in the endpoint's own dialect, never a 500, never an echo of
// the input (issue 9 §3, §4, §6).
let p: TestPlatform;
let writer: Caller;
let logText = '';
const OO = 'application/fhir+json';

before(async () => {
  const logStream = new Writable({
    write(chunk, _enc, cb) {
      logText += chunk.toString();
      cb();
    },
  });
  p = await startPlatform({ logLevel: 'info' }, { logStream });
  await partition(p, 'h1');
  writer = await secretClient(p, 'h-writer', 'system/*.cruds');
  await grant(p, { partition: 'h1', client: 'h-writer', scope: 'system/*.cruds' });
});
after(() => p.stop());

const raw = (path: string, init: { method?: string; body?: string | Buffer; headers?: Record<string, string> } = {}) =>
  fetch(`${p.base}${path}`, {
    method: init.method ?? 'GET',
    dispatcher: p.agent(),
    headers: { authorization: `Bearer ${writer.token}`, ...init.headers },
    ...(init.body !== undefined ? { body: init.body } : {}),
  });

function assertOutcome(r: { status: number; json: Record<string, unknown>; text: string }, status: number, re: RegExp) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json.resourceType, 'OperationOutcome', r.text);
  const issue = (r.json.issue as { diagnostics: string }[])[0];
  assert.match(issue?.diagnostics ?? '', re);
}

describe('bodies', () => {
  test('deeply nested JSON (objects and arrays, alone or inside a resource) → 400 OperationOutcome', async () => {
    const bodies = [
      `${'['.repeat(50_000)}${']'.repeat(50_000)}`,
      `${'{"a":'.repeat(50_000)}1${'}'.repeat(50_000)}`,
      `{"resourceType":"Patient","extension":${'['.repeat(5000)}${']'.repeat(5000)}}`,
      `{"resourceType":"Patient","extension":[${'{"url":"x","extension":['.repeat(2000)}${']}'.repeat(2000)}]}`,
    ];
    for (const body of bodies) {
      assertOutcome(await fhir(p, writer, 'POST', '/h1/Patient', body), 400, /nests deeper than 100 levels/);
    }
    // A legitimately nested resource still goes in.
    const ok = await fhir(p, writer, 'POST', '/h1/Patient', {
      resourceType: 'Patient',
      extension: [{ url: 'https://x.example/a', extension: [{ url: 'b', valueString: 'c' }] }],
    });
    assert.equal(ok.status, 201, ok.text);
  });

  test('__proto__ / constructor keys → 400 saying which key', async () => {
    for (const key of ['__proto__', 'constructor']) {
      const r = await fhir(p, writer, 'POST', '/h1/Patient', `{"resourceType":"Patient","${key}":{"polluted":true}}`);
      assertOutcome(r, 400, new RegExp(`"${key}"`));
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  test("a primitive's extension element that is not an object (`_issued` as a string) → 422, in a create, an update and a transaction", async () => {
    const obs = {
      resourceType: 'Observation',
      id: 'prim-ext',
      status: 'final',
      code: { text: 'x' },
      _issued: '2020-02-29T06:09:27.970-08:00',
    };
    assertOutcome(await fhir(p, writer, 'POST', '/h1/Observation', obs), 422, /malformed.*extension/);
    assertOutcome(await fhir(p, writer, 'PUT', '/h1/Observation/prim-ext', obs), 422, /malformed/);
    const name = { resourceType: 'Patient', name: [{ given: ['a'], _given: ['not an element'] }] };
    const tx = await fhir(p, writer, 'POST', '/h1', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ resource: name, request: { method: 'POST', url: 'Patient' } }],
    });
    assertOutcome(tx, 422, /malformed/);
    assert.equal((await fhir(p, writer, 'GET', '/h1/Observation/prim-ext')).status, 404);
  });

  test('patches that would exhaust the process are refused, and the server lives on', async () => {
    const put = await fhir(p, writer, 'PUT', '/h1/Patient/grow', {
      resourceType: 'Patient',
      id: 'grow',
      name: Array.from({ length: 50 }, (_, i) => ({ family: `F${i}`, given: ['a', 'b', 'c'] })),
    });
    assert.equal(put.status, 201, put.text);
    const jsonPatch = (ops: unknown[]) =>
      fhir(p, writer, 'PATCH', '/h1/Patient/grow', JSON.stringify(ops), {
        'content-type': 'application/json-patch+json',
      });
    // Each copy of a list into itself doubles it: thirty of them would be gigabytes.
    const doubling = Array.from({ length: 30 }, () => ({ op: 'copy', from: '/name', path: '/name/-' }));
    assertOutcome(await jsonPatch(doubling), 422, /would exceed 16777216 bytes/);
    const fromRoot = [
      { op: 'add', path: '/contained', value: [] },
      ...Array.from({ length: 30 }, () => ({ op: 'copy', from: '', path: '/contained/-' })),
    ];
    assertOutcome(await jsonPatch(fromRoot), 422, /would exceed/);
    const many = Array.from({ length: 1001 }, () => ({ op: 'test', path: '/id', value: 'grow' }));
    assertOutcome(await jsonPatch(many), 400, /at most 1000 operations/);
    // FHIRPath that refers back to the resource from inside a function, or builds strings or collections.
    const fhirPath = (path: string) =>
      fhir(p, writer, 'PATCH', '/h1/Patient/grow', {
        resourceType: 'Parameters',
        parameter: [
          {
            name: 'operation',
            part: [
              { name: 'type', valueCode: 'delete' },
              { name: 'path', valueString: path },
            ],
          },
        ],
      });
    for (const [path, message] of [
      ['Patient.name.select(%context.name.select(%context.name.given))', /variables/],
      ['Patient.name.select(given)', /select\(\) is not allowed/],
      ["Patient.id.replace('x', 'xxxxxxxxxx').replace('x', 'xxxxxxxxxx')", /replace\(\) is not allowed/],
      ['Patient.descendants()', /descendants\(\) is not allowed/],
      ['Patient.repeat(name)', /repeat\(\) is not allowed/],
      [`Patient.name.where(${'family.exists() and '.repeat(60)}true)`, /at most 1000 characters/],
    ] as const) {
      assertOutcome(await fhirPath(path), 400, message);
    }
    // Inside a string literal a function name is only text.
    const literal = await fhirPath("Patient.name.where(family = 'select(%x)')");
    assert.equal(literal.status, 200, literal.text);
    const after = await fhir(p, writer, 'GET', '/h1/Patient/grow');
    assert.equal(after.status, 200);
    assert.equal((after.json.name as unknown[]).length, 50, 'none of the refused patches was written');
  });

  test('an oversized body: the client receives the 413 (also while still uploading)', async () => {
    const big = Buffer.alloc(17 * 1024 * 1024, 0x20);
    for (let i = 0; i < 3; i++) {
      const res = await raw('/fhir/h1/Patient', {
        method: 'POST',
        body: big,
        headers: { 'content-type': 'application/fhir+json' },
      });
      assert.equal(res.status, 413);
      const oo = (await res.json()) as { issue: { code: string }[] };
      assert.equal(oo.issue[0]?.code, 'too-costly');
    }
  });
});

describe('URLs and headers', () => {
  test('a path segment too long → 414 OperationOutcome without the input', async () => {
    const res = await raw(`/fhir/h1/Patient/${'a'.repeat(5000)}`);
    assert.equal(res.status, 414);
    assert.equal(res.headers.get('content-type')?.split(';')[0], OO);
    assert.doesNotMatch(await res.text(), /aaaa/);
  });

  test('a URL too long → 414 in the dialect (OperationOutcome under /fhir, OAuth JSON under /oauth)', async () => {
    const q = 'x'.repeat(9000);
    const f = await raw(`/fhir/h1/Patient?name=${q}`);
    assert.equal(f.status, 414);
    const fText = await f.text();
    assert.match(fText, /OperationOutcome/);
    assert.doesNotMatch(fText, /xxxx/);
    const o = await raw(`/oauth/authorize?state=${q}`);
    assert.equal(o.status, 414);
    const oJson = (await o.json()) as Record<string, string>;
    assert.equal(oJson.error, 'invalid_request');
    assert.doesNotMatch(JSON.stringify(oJson), /xxxx/);
  });

  test('headers too large → 431 in the dialect, without the input', async () => {
    const headers = { 'x-filler': 'y'.repeat(20_000) };
    const f = await raw('/fhir/h1/Patient', { headers });
    assert.equal(f.status, 431);
    const fText = await f.text();
    assert.match(fText, /OperationOutcome/);
    assert.doesNotMatch(fText, /yyyy/);
    const o = await raw('/oauth/token', { method: 'POST', headers, body: 'grant_type=client_credentials' });
    assert.equal(o.status, 431);
    const oJson = (await o.json()) as Record<string, string>;
    assert.equal(oJson.error, 'invalid_request');
    // Far beyond the limit, the answer still arrives instead of a reset.
    const huge = await raw('/fhir/h1/Patient', { headers: { 'x-filler': 'z'.repeat(100_000) } });
    assert.equal(huge.status, 431);
    assert.doesNotMatch(await huge.text(), /zzzz/);
  });

  /** A TLS connection to the platform that speaks raw bytes. */
  async function tlsConnection() {
    const socket = connect({
      host: '127.0.0.1',
      port: Number(new URL(p.base).port),
      ca: p.ca,
      servername: 'localhost',
    });
    await once(socket, 'secureConnect');
    return socket;
  }

  /** A raw TLS connection, and everything it receives until it closes. */
  async function rawConnection() {
    const socket = await tlsConnection();
    const answer = (async () => {
      let text = '';
      for await (const chunk of socket) text += chunk;
      return text;
    })();
    return { socket, answer };
  }

  test('bytes that are not HTTP → 400, answered before the connection closes', async () => {
    const { socket, answer: received } = await rawConnection();
    socket.end('NOT HTTP AT ALL\r\n\r\n');
    const answer = await received;
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.match(answer, /OperationOutcome/);
  });

  test('a connection paused for backpressure whose bytes still reach the parser (HPE_PAUSED) → 503 to retry; the server lives on', async () => {
    // Node pauses a connection whose last response has not drained when the next request arrives; over TLS the
    // rest of what was already read still reaches the parser (seen under bench:fhir's ingest on Node 20). This
    // puts a real connection in that state: paused as Node's parserOnIncoming does it, the parser's HPE_PAUSED,
    // then the TLS layer delivering the rest of its read — which must not reach the HTTP server's own 'data'
    // listener (it asserts the connection is not paused and takes the process down).
    const accepted = once(p.app.server, 'secureConnection');
    const { socket, answer: received } = await rawConnection();
    const [server] = (await accepted) as [import('node:tls').TLSSocket & { _paused?: boolean }];
    socket.write('POST /fhir/h1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/fhir+json\r\n');
    socket.write('Content-Length: 100000\r\n\r\n{"resourceType":"Bundle","type":"transaction","entry":[');
    server._paused = true;
    server.pause();
    p.app.server.emit('clientError', Object.assign(new Error('Parse Error: Paused'), { code: 'HPE_PAUSED' }), server);
    server.push(Buffer.from('{"resource":{"resourceType":"Patient"}},'));
    const answer = await received;
    assert.match(answer, /^HTTP\/1\.1 503 /);
    assert.match(answer, /\r\nRetry-After: 1\r\n/i);
    assert.match(answer, /"code":"transient"/);
    assert.equal((await raw('/fhir/h1/Patient')).status, 200);
  });

  test('a large POST sent while a large answer is still being written is read once the answer drains, not refused', async () => {
    // Node pauses the connection (the answer has not drained) and over TLS its parser used to receive the POST's
    // next bytes anyway: HPE_PAUSED, a 503 and a closed connection for a valid request (bench:fhir's ingest met it).
    // The answer must be larger than the kernel's socket buffers take while the client is not reading.
    // R4 strings hold at most 1 MB each: ten of them.
    const filler = (c: string) => ({ url: 'https://x.example/filler', valueString: c.repeat(900_000) });
    const big = { resourceType: 'Basic', code: { text: 'filler' }, extension: [...'abcdefghij'].map(filler) };
    const stored = await fhir(p, writer, 'POST', '/h1/Basic', big);
    assert.equal(stored.status, 201, stored.text.slice(0, 300));
    const socket = await tlsConnection();
    const auth = `Authorization: Bearer ${writer.token}\r\nHost: localhost\r\n`;
    socket.write(`GET /fhir/h1/Basic/${stored.json.id} HTTP/1.1\r\n${auth}Accept: application/fhir+json\r\n\r\n`);
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    await once(socket, 'data');
    // The answer has begun and is far from written: stop reading it, and send the next request whole.
    socket.pause();
    const body = JSON.stringify({
      resourceType: 'Patient',
      extension: [{ url: 'https://x.example/n', valueString: 'n'.repeat(900_000) }],
    });
    socket.write(
      `POST /fhir/h1/Patient HTTP/1.1\r\n${auth}Content-Type: application/fhir+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
    await new Promise((r) => setTimeout(r, 300));
    socket.resume();
    await once(socket, 'close');
    const text = Buffer.concat(chunks).toString('latin1');
    const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]);
    assert.deepEqual(statuses, ['200', '201'], text.slice(-400));
    assert.ok(text.includes('j'.repeat(900_000)), 'the first answer came whole');
  });
});

describe('request bodies held back', () => {
  test('transaction Bundles of 30 KB, one after another on one connection, are all answered', async () => {
    // The bench's seed: bodies larger than a request's read buffer, so Node holds the connection back while the
    // body is read. Unhooking Node's parser only at such a pause (an earlier form of tls-request-reads.ts) reset
    // the connection here.
    const agent = p.agent();
    for (let i = 0; i < 40; i++) {
      const entry = Array.from({ length: 30 }, () => {
        const id = randomUUID();
        return {
          resource: { resourceType: 'Basic', id, code: { text: 'x'.repeat(800) } },
          request: { method: 'PUT', url: `Basic/${id}` },
        };
      });
      const res = await fetch(`${p.fhirBase}/h1`, {
        method: 'POST',
        dispatcher: agent,
        headers: { authorization: `Bearer ${writer.token}`, 'content-type': 'application/fhir+json' },
        body: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry }),
      });
      assert.equal(res.status, 200, await res.text());
      await res.arrayBuffer().catch(() => {});
    }
  });
});

describe('Bundles and searches', () => {
  test('a batch with bad entries answers each entry; the good ones are written', async () => {
    const r = await fhir(p, writer, 'POST', '/h1', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        {
          resource: { resourceType: 'Patient', id: 'ignored', gender: 'female' },
          request: { method: 'POST', url: 'Patient' },
        },
        { request: { method: 'FOO', url: 'Patient' } },
        { resource: { resourceType: 'Patient', gender: 'nonsense' }, request: { method: 'POST', url: 'Patient' } },
        { request: { method: 'GET', url: 'NoSuchType/1' } },
        {
          resource: { resourceType: 'Patient', id: 'batch-ok', gender: 'male' },
          request: { method: 'PUT', url: 'Patient/batch-ok' },
        },
      ],
    });
    assert.equal(r.status, 200, r.text);
    const statuses = (
      r.json.entry as { response: { status: string; outcome?: { issue: { diagnostics: string }[] } } }[]
    ).map((e) => e.response);
    assert.deepEqual(
      statuses.map((s) => s.status.split(' ')[0]),
      ['201', '400', '422', '400', '201'],
    );
    assert.match(statuses[1]?.outcome?.issue[0]?.diagnostics ?? '', /entry\[1\].*FOO/);
    assert.match(statuses[3]?.outcome?.issue[0]?.diagnostics ?? '', /NoSuchType/);
    assert.equal((await fhir(p, writer, 'GET', '/h1/Patient/batch-ok')).status, 200);
  });

  test('a transaction with one bad entry fails whole and writes nothing', async () => {
    const r = await fhir(p, writer, 'POST', '/h1', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: { resourceType: 'Patient' }, request: { method: 'PUT', url: 'Patient/tx-none' } },
        { request: { method: 'FOO', url: 'Patient' } },
      ],
    });
    assertOutcome(r, 400, /entry\[1\]/);
    assert.equal((await fhir(p, writer, 'GET', '/h1/Patient/tx-none')).status, 404);
  });

  test('_summary=count and _count=0 give the real total and no entry array; empty pages have no entry', async () => {
    const count = await fhir(p, writer, 'GET', '/h1/Patient?_summary=count');
    const zero = await fhir(p, writer, 'GET', '/h1/Patient?_count=0');
    const all = await fhir(p, writer, 'GET', '/h1/Patient?_total=accurate');
    assert.ok((all.json.total as number) >= 3);
    for (const r of [count, zero]) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.total, all.json.total);
      assert.ok(!('entry' in r.json), r.text);
    }
    const none = await fhir(p, writer, 'GET', '/h1/Patient?gender=unknown');
    assert.equal(none.json.total, 0);
    assert.ok(!('entry' in none.json), none.text);
  });

  test('sort keys and _elements names are bounded, in a URL and in a _search body of any size', async () => {
    const sorts = (n: number) => `_sort=${Array.from({ length: n }, () => 'birthdate').join(',')}`;
    const names = (n: number) => `_elements=${Array.from({ length: n }, (_, i) => `e${i}`).join(',')}`;
    assert.equal((await fhir(p, writer, 'GET', `/h1/Patient?${sorts(10)}`)).status, 200);
    assertOutcome(await fhir(p, writer, 'GET', `/h1/Patient?${sorts(11)}`), 400, /_sort takes at most 10/);
    assertOutcome(await fhir(p, writer, 'GET', `/h1/Patient?${names(101)}`), 400, /_elements takes at most 100/);
    // A form body is not held to the URL's 8 KiB: 5,000 sort keys used to reach the database (500).
    for (const [form, re] of [
      [sorts(5000), /_sort takes at most 10/],
      [names(100_000), /_elements takes at most 100/],
    ] as const) {
      const r = await raw('/fhir/h1/Patient/_search', {
        method: 'POST',
        body: form,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      const text = await r.text();
      assertOutcome({ status: r.status, json: JSON.parse(text), text }, 400, re);
    }
    const kickOff = await fhir(
      p,
      writer,
      'POST',
      '/h1/$export',
      {
        resourceType: 'Parameters',
        parameter: [{ name: '_elements', valueString: Array.from({ length: 100_000 }, () => 'id').join(',') }],
      },
      { prefer: 'respond-async', accept: 'application/fhir+json' },
    );
    assertOutcome(kickOff, 400, /_elements takes at most 500/);
  });
});

describe('scopes and introspection', () => {
  test('a scope naming a resource type that does not exist → invalid_scope; registration refuses it too', async () => {
    const { client_secret } = await p.register('scoped', { auth: 'client_secret_basic', scope: 'system/*.rs' });
    const res = await p.fetch(p.tokenUrl, {
      method: 'POST',
      dispatcher: p.agent(),
      headers: {
        authorization: `Basic ${Buffer.from(`scoped:${client_secret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'grant_type=client_credentials&scope=system/Foo.rs',
    });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_scope');
    await assert.rejects(p.register('foo-scoped', { auth: 'client_secret_basic', scope: 'system/Foo.rs' }), /Foo/);
  });

  test('ITI-102: only the token’s own client or a registered resource server may introspect it', async () => {
    const holder = await p.register('holder-i', { auth: 'client_secret_basic', scope: 'system/*.rs' });
    const opaque = await p.register('holder-o', {
      auth: 'client_secret_basic',
      scope: 'system/*.rs',
      tokenFormat: 'opaque',
    });
    const stranger = await p.register('stranger-i', { auth: 'client_secret_basic', scope: 'system/*.rs' });
    const rs = await p.register('rs-i', { auth: 'client_secret_basic', scope: 'system/*.rs', resourceServer: true });
    const introspect = async (caller: string, secret: string, token: string) => {
      const res = await p.fetch(`${p.base}/oauth/introspect`, {
        method: 'POST',
        dispatcher: p.agent(),
        headers: {
          authorization: `Basic ${Buffer.from(`${caller}:${secret}`).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: `token=${token}`,
      });
      return (await res.json()) as Record<string, unknown>;
    };
    for (const [id, out] of [
      ['holder-i', holder],
      ['holder-o', opaque],
    ] as const) {
      const token = await tokenWithSecret(p, id, out.client_secret as string);
      assert.deepEqual(await introspect('stranger-i', stranger.client_secret as string, token), { active: false }, id);
      assert.equal((await introspect('rs-i', rs.client_secret as string, token)).active, true, id);
      assert.equal((await introspect(id, out.client_secret as string, token)).active, true, id);
    }
  });
});

describe('logs', () => {
  test("a request's log lines carry its request and correlation ids (J52)", async () => {
    const r = await raw('/fhir/h1/Patient?name=logged', {
      headers: { 'x-request-id': 'req-logged-1', 'x-correlation-id': 'corr-logged-1' },
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-correlation-id'), 'corr-logged-1');
    await r.text();
    // "request completed" is written when the response has finished, which the client may see first.
    for (let i = 0; i < 50 && !/"reqId":"req-logged-1"[^\n]*request completed/.test(logText); i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const lines = logText
      .split('\n')
      .filter((l) => l.includes('req-logged-1'))
      .map((l) => JSON.parse(l) as { reqId?: string; correlationId?: string; msg?: string });
    assert.deepEqual(
      lines.map((l) => [l.msg, l.reqId, l.correlationId]),
      [
        ['incoming request', 'req-logged-1', 'corr-logged-1'],
        ['request completed', 'req-logged-1', 'corr-logged-1'],
      ],
    );
  });

  test('the FHIR search parameter code= is logged; OAuth codes and tokens are not', async () => {
    await fhir(p, writer, 'GET', '/h1/Observation?code=http://loinc.org|8867-4');
    await raw('/oauth/authorize?code=secret-code-123&access_token=secret-token-456');
    assert.match(logText, /Observation\?code=http:\/\/loinc.org\|8867-4/);
    assert.doesNotMatch(logText, /secret-code-123|secret-token-456/);
    assert.ok(!logText.includes(writer.token), 'no bearer token in the log');
  });

  test('a failed client authentication says why in the log, while the client only sees invalid_client', async () => {
    const { client_secret } = await p.register('logged-auth', { auth: 'client_secret_basic', scope: 'system/*.rs' });
    await p.register('cert-auth', { auth: 'tls_client_auth', scope: 'system/*.rs', out: `${p.dataDir}/certs` });
    const token = (auth: string | undefined, body: string, agent: Agent = p.agent()) =>
      p.fetch(p.tokenUrl, {
        method: 'POST',
        dispatcher: agent,
        headers: {
          ...(auth ? { authorization: `Basic ${Buffer.from(auth).toString('base64')}` } : {}),
          'content-type': 'application/x-www-form-urlencoded',
        },
        body,
      });
    const cases: [Promise<Response | Awaited<ReturnType<typeof fetch>>>, RegExp][] = [
      [token('nobody:x', 'grant_type=client_credentials'), /"client_id":"nobody".*"reason":"client not found"/],
      [
        token('logged-auth:wrong', 'grant_type=client_credentials'),
        /"client_id":"logged-auth".*"reason":"invalid secret provided"/,
      ],
      [
        token(undefined, 'grant_type=client_credentials&client_id=cert-auth'),
        /"client_id":"cert-auth".*"reason":"client certificate was not provided"/,
      ],
    ];
    // A certificate with the right CN from another CA, and an assertion signed with a key that is not registered.
    const foreignCa = await createCa('someone else', 30);
    const foreign = await issueLeaf(foreignCa, { commonName: 'cert-auth', usage: 'client', validDays: 30 });
    cases.push([
      token(
        undefined,
        'grant_type=client_credentials&client_id=cert-auth',
        p.agent({ cert: foreign.certPem, key: foreign.keyPem }),
      ),
      /"client_id":"cert-auth".*"reason":"client certificate was not verified"/,
    ]);
    const registered = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(registered.publicKey)), kid: 'k1', alg: 'ES256' };
    const jwksFile = `${p.dataDir}/jwt-jwks.json`;
    writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));
    await p.register('jwt-auth', { auth: 'private_key_jwt', jwks: jwksFile, scope: 'system/*.rs' });
    const impostor = await generateKeyPair('ES256');
    const assertion = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer('jwt-auth')
      .setSubject('jwt-auth')
      .setAudience(p.tokenUrl)
      .setJti(randomUUID())
      .setIssuedAt()
      .setExpirationTime('2m')
      .sign(impostor.privateKey);
    cases.push([
      token(
        undefined,
        `grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=${assertion}`,
      ),
      /"client_id":"jwt-auth".*"reason":"[^"]*signature[^"]*"/,
    ]);
    for (const [pending, reason] of cases) {
      const res = await pending;
      assert.equal(res.status, 401);
      const body = (await res.json()) as Record<string, string>;
      assert.equal(body.error, 'invalid_client');
      assert.doesNotMatch(JSON.stringify(body), /not found|secret|certificate/);
      assert.match(logText, reason);
    }
    assert.ok(!logText.includes(client_secret as string));
    assert.ok(!logText.includes('wrong'), 'the presented secret is not logged');
    assert.ok(!logText.includes(assertion), 'the assertion is not logged');
  });
});
