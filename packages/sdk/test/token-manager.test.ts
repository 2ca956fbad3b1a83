import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readPair, startPlatform, type TestPlatform } from '@carevault/server/testing';
import { exportJWK, generateKeyPair } from 'jose';
import { ConfigurationError, OAuthError, TokenManager, TransportError } from '../src/index.ts';
import { tlsFetch } from '../src/node.ts';

// The SDK token manager against a real carevault over HTTPS.
let p: TestPlatform;
const closers: (() => Promise<void>)[] = [];

before(async () => {
  p = await startPlatform();
});
after(async () => {
  await Promise.all(closers.map((c) => c()));
  await p.stop();
});

function payload(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString());
}

/** A fetch that trusts the platform CA and counts token requests. */
function counting(options: { cert?: string; key?: string } = {}) {
  const base = tlsFetch({ ca: p.ca, ...options });
  closers.push(() => base.close());
  const counter = { tokenRequests: 0 };
  const f = ((input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    if (String(input instanceof Request ? input.url : input).endsWith('/oauth/token')) counter.tokenRequests++;
    return base(input, init);
  }) as typeof fetch;
  return { fetch: f, counter };
}

describe('TokenManager', () => {
  test('tls_client_auth: a certificate-bound token for the technical user (seed 000)', async () => {
    const pair = readPair(
      await p.register('sdk-tcu', { auth: 'tls_client_auth', scope: 'system/*.rs', out: join(p.dataDir, 'o') }),
    );
    const { fetch } = counting(pair);
    const tm = new TokenManager({ issuer: p.issuer, clientId: 'sdk-tcu', auth: { method: 'tls_client_auth' }, fetch });
    const token = await tm.getToken();
    const thumb = createHash('sha256').update(new X509Certificate(pair.cert).raw).digest('base64url');
    assert.deepEqual(payload(token).cnf, { 'x5t#S256': thumb });
    assert.equal(payload(token).scope, 'system/*.rs');
  });

  test('private_key_jwt with scope, resource and purpose_of_use', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES384');
    const jwks = join(p.dataDir, 'sdk-jwks.json');
    writeFileSync(jwks, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'sdk1', alg: 'ES384' }] }));
    await p.register('sdk-backend', {
      auth: 'private_key_jwt',
      jwks,
      scope: 'system/*.rs',
      purposeOfUse: ['TREAT', 'ETREAT'],
    });
    const tm = new TokenManager({
      issuer: p.issuer,
      clientId: 'sdk-backend',
      auth: { method: 'private_key_jwt', privateKey, kid: 'sdk1' },
      scope: 'system/Observation.rs',
      resource: p.fhirBase,
      parameters: { purpose_of_use: 'ETREAT' },
      fetch: counting().fetch,
    });
    const claims = payload(await tm.getToken());
    assert.equal(claims.scope, 'system/Observation.rs');
    assert.deepEqual((claims.extensions as { ihe_iua: { purpose_of_use: unknown } }).ihe_iua.purpose_of_use, [
      { system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'ETREAT' },
    ]);
  });

  test('concurrent callers share one token request (single flight)', async () => {
    const { client_secret } = await p.register('sdk-secret', {
      auth: 'client_secret_basic',
      scope: 'system/Patient.rs',
    });
    const { fetch, counter } = counting();
    const tm = new TokenManager({
      issuer: p.issuer,
      clientId: 'sdk-secret',
      auth: { method: 'client_secret_basic', secret: client_secret as string },
      fetch,
    });
    const tokens = await Promise.all(Array.from({ length: 25 }, () => tm.getToken()));
    assert.equal(new Set(tokens).size, 1);
    assert.equal(counter.tokenRequests, 1);
  });

  test('the token is renewed before it expires, not after (seed 000)', async () => {
    const { client_secret } = await p.register('sdk-refresh', {
      auth: 'client_secret_post',
      scope: 'system/Patient.rs',
    });
    const { fetch, counter } = counting();
    let clock = Date.now();
    const tm = new TokenManager({
      issuer: p.issuer,
      clientId: 'sdk-refresh',
      auth: { method: 'client_secret_post', secret: client_secret as string },
      fetch,
      refreshSkewSeconds: 60,
      now: () => clock,
    });
    const first = await tm.getAccessToken();
    assert.equal(first.expiresAt - first.refreshAt, 60_000);
    clock += 239_000; // 61 s before expiry: still fresh
    assert.equal(await tm.getToken(), first.accessToken);
    assert.equal(counter.tokenRequests, 1);
    clock += 2_000; // 59 s before expiry: renew now, while the old token is still valid
    const second = await tm.getToken();
    assert.notEqual(second, first.accessToken);
    assert.equal(counter.tokenRequests, 2);
    tm.invalidate();
    assert.notEqual(await tm.getToken(), second);
    assert.equal(counter.tokenRequests, 3);
  });

  test('OAuth errors are typed and not retried; a failure does not stick', async () => {
    const { client_secret } = await p.register('sdk-typed', {
      auth: 'client_secret_basic',
      scope: 'system/Patient.rs',
    });
    const { fetch, counter } = counting();
    const bad = new TokenManager({
      issuer: p.issuer,
      clientId: 'sdk-typed',
      auth: { method: 'client_secret_basic', secret: 'wrong' },
      fetch,
    });
    await assert.rejects(bad.getToken(), (err: unknown) => {
      assert.ok(err instanceof OAuthError);
      assert.equal(err.error, 'invalid_client');
      assert.equal(err.status, 401);
      return true;
    });
    assert.equal(counter.tokenRequests, 1, 'invalid_client is not retried');
    const scoped = new TokenManager({
      issuer: p.issuer,
      clientId: 'sdk-typed',
      auth: { method: 'client_secret_basic', secret: client_secret as string },
      scope: 'system/Observation.rs',
      fetch,
    });
    await assert.rejects(
      scoped.getToken(),
      (err: unknown) => err instanceof OAuthError && err.error === 'invalid_scope',
    );
  });

  test('an unreachable server is a TransportError after bounded retries; bad setup is a ConfigurationError', async () => {
    const tm = new TokenManager({
      issuer: 'https://127.0.0.1:1',
      clientId: 'x',
      auth: { method: 'client_secret_basic', secret: 's' },
      fetch: counting().fetch,
      maxRetries: 1,
    });
    await assert.rejects(tm.getToken(), TransportError);
    assert.throws(
      () => new TokenManager({ issuer: 'not a url', clientId: 'x', auth: { method: 'tls_client_auth' } }),
      ConfigurationError,
    );
  });
});

describe('TokenManager retries transient failures', () => {
  let flaky: Server;
  let flakyIssuer: string;
  let hits = 0;

  before(async () => {
    // A real HTTPS front that answers 503 + Retry-After to the first token request and forwards the rest.
    const upstream = tlsFetch({ ca: p.ca });
    closers.push(() => upstream.close());
    flaky = createServer({ key: p.pki.server.keyPem, cert: p.pki.server.certPem }, async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      if (req.url === '/oauth/token' && hits++ === 0) {
        res.writeHead(503, { 'retry-after': '0', 'content-type': 'text/plain' }).end('busy');
        return;
      }
      const path = req.url === '/.well-known/oauth-authorization-server' ? req.url : (req.url as string);
      const r = await upstream(`${p.base}${path}`, {
        method: req.method as string,
        headers: { ...(req.headers as Record<string, string>), host: new URL(p.base).host },
        ...(chunks.length ? { body: Buffer.concat(chunks) } : {}),
      });
      let text = await r.text();
      if (path.startsWith('/.well-known')) text = text.replaceAll(p.base, flakyIssuer);
      res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'application/json' }).end(text);
    });
    await new Promise<void>((r) => flaky.listen(0, '127.0.0.1', r));
    flakyIssuer = `https://localhost:${(flaky.address() as { port: number }).port}`;
  });
  after(async () => {
    flaky.closeAllConnections();
    await new Promise((r) => flaky.close(r));
  });

  test('503 with Retry-After is retried and then succeeds', async () => {
    const { client_secret } = await p.register('sdk-retry', { auth: 'client_secret_post', scope: 'system/Patient.rs' });
    const { fetch } = counting();
    const tm = new TokenManager({
      issuer: flakyIssuer,
      clientId: 'sdk-retry',
      auth: { method: 'client_secret_post', secret: client_secret as string },
      fetch,
    });
    const token = await tm.getToken();
    assert.equal(payload(token).client_id, 'sdk-retry');
    assert.equal(hits, 2);
  });
});

describe('TokenManager against a rate-limited platform (issue 5: 429 + Retry-After)', () => {
  test('waits for Retry-After and then gets its token', async () => {
    const limited = await startPlatform({ rateLimit: '2/s' });
    try {
      const out = await limited.register('sdk-burst', { auth: 'client_secret_basic', scope: 'system/*.rs' });
      const base = tlsFetch({ ca: limited.ca });
      const seen: number[] = [];
      const f = (async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
        const res = await base(input, init);
        if (String(input instanceof Request ? input.url : input).endsWith('/oauth/token')) seen.push(res.status);
        return res;
      }) as typeof fetch;
      // Three managers at once: the bucket holds two, the third is told to come back after a second.
      const managers = [0, 1, 2].map(
        () =>
          new TokenManager({
            issuer: limited.issuer,
            clientId: 'sdk-burst',
            auth: { method: 'client_secret_basic', secret: out.client_secret as string },
            fetch: f,
            maxRetries: 4,
          }),
      );
      const started = Date.now();
      const tokens = await Promise.all(managers.map((m) => m.getToken()));
      assert.equal(tokens.length, 3);
      assert.ok(tokens.every((t) => payload(t).client_id === 'sdk-burst'));
      assert.ok(seen.includes(429), `one request was throttled (${seen.join(',')})`);
      assert.ok(Date.now() - started >= 900, 'the retry waited for Retry-After');
      await base.close();
    } finally {
      await limited.stop();
    }
  });
});
