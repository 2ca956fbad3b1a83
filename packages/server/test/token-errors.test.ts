import assert from 'node:assert/strict';
import { createHmac, createPrivateKey, createPublicKey } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { createCa, issueLeaf } from '../src/pki/x509.ts';
import { readPair, startPlatform, type TestPlatform } from './helpers/platform.ts';

// Bad input at the token, introspection and revocation endpoints: each gets a clear RFC 6749 error.
let p: TestPlatform;
let secret: string;
let tlsPair: { cert: string; key: string };
let rsaPrivate: CryptoKey;
let rsaPublicPem: string;

const FORM = 'application/x-www-form-urlencoded';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

before(async () => {
  p = await startPlatform();
  secret = (
    await p.register('sec', { auth: 'client_secret_basic', scope: 'system/Patient.rs', purposeOfUse: ['TREAT'] })
  ).client_secret as string;
  tlsPair = readPair(
    await p.register('tcu', { auth: 'tls_client_auth', scope: 'system/*.rs', out: join(p.dataDir, 'o') }),
  );
  const rsa = await generateKeyPair('RS384', { extractable: true, modulusLength: 2048 });
  rsaPrivate = rsa.privateKey;
  rsaPublicPem = createPublicKey(createPrivateKey((await exportPem(rsa.privateKey)) as string)).export({
    type: 'spki',
    format: 'pem',
  }) as string;
  const jwks = join(p.dataDir, 'jwks.json');
  writeFileSync(jwks, JSON.stringify({ keys: [{ ...(await exportJWK(rsa.publicKey)), kid: 'rsa1', alg: 'RS384' }] }));
  await p.register('jwt-client', { auth: 'private_key_jwt', jwks, scope: 'system/*.rs' });
  await p.register('public-app', { auth: 'none', redirectUri: ['https://app.example/cb'], scope: 'patient/*.rs' });
});
after(async () => {
  await p.stop();
});

async function exportPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await crypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64')}\n-----END PRIVATE KEY-----\n`;
}

async function post(
  path: string,
  body: string | Buffer,
  options: { headers?: Record<string, string>; cert?: { cert: string; key: string } } = {},
) {
  const res = await p.fetch(`${p.base}${path}`, {
    method: 'POST',
    dispatcher: p.agent(options.cert),
    headers: { 'content-type': FORM, ...options.headers },
    body,
  });
  const text = await res.text();
  assert.ok(!/\n\s+at /.test(text), `no stack trace in ${text}`);
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, json, headers: res.headers, text };
}

/** A form POST through node:https, which sends the Host header it is given (undici's fetch sets its own). */
function rawPost(
  path: string,
  body: string,
  headers: Record<string, string>,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, p.base);
    const req = request(
      { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', ca: p.ca, servername: 'localhost' },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on('error', reject);
    for (const [name, value] of Object.entries({ 'content-type': FORM, ...headers })) req.setHeader(name, value);
    req.end(body);
  });
}

const basic = (id: string, s: string) => ({ authorization: `Basic ${Buffer.from(`${id}:${s}`).toString('base64')}` });

async function expectError(
  r: Awaited<ReturnType<typeof post>>,
  status: number | number[],
  error: string,
): Promise<void> {
  const statuses = Array.isArray(status) ? status : [status];
  assert.ok(statuses.includes(r.status), `status ${r.status} (${r.text}) not in ${statuses}`);
  assert.equal(r.json.error, error, r.text);
  assert.match(r.headers.get('content-type') ?? '', /application\/json/);
}

function assertion(claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    iss: 'jwt-client',
    sub: 'jwt-client',
    aud: p.tokenUrl,
    jti: crypto.randomUUID(),
    exp: now + 120,
    ...claims,
  })
    .setProtectedHeader({ alg: 'RS384', kid: 'rsa1', typ: 'JWT', ...header })
    .sign(rsaPrivate);
}

const assertionBody = (jwt: string, extra = '') =>
  `grant_type=client_credentials&client_assertion_type=${encodeURIComponent(ASSERTION_TYPE)}&client_assertion=${jwt}${extra}`;

describe('token endpoint: malformed requests', () => {
  test('a JSON body is refused (only form posts)', async () => {
    const r = await post('/oauth/token', '{"grant_type":"client_credentials"}', {
      headers: { ...basic('sec', secret), 'content-type': 'application/json' },
    });
    await expectError(r, 400, 'invalid_request');
  });

  test('missing grant_type', async () => {
    await expectError(await post('/oauth/token', 'scope=x', { headers: basic('sec', secret) }), 400, 'invalid_request');
  });

  test('duplicate parameters', async () => {
    const r = await post('/oauth/token', 'grant_type=client_credentials&grant_type=client_credentials', {
      headers: basic('sec', secret),
    });
    await expectError(r, 400, 'invalid_request');
  });

  test('unknown grant type → unsupported_grant_type (C13 E03)', async () => {
    const r = await post('/oauth/token', 'grant_type=not_a_grant_type', { headers: basic('sec', secret) });
    await expectError(r, 400, 'unsupported_grant_type');
  });

  test('an oversized body is refused without a server error', async () => {
    const r = await post('/oauth/token', `grant_type=client_credentials&scope=${'a'.repeat(200_000)}`, {
      headers: basic('sec', secret),
    });
    assert.ok(r.status === 413 || r.status === 400, `status ${r.status}`);
    assert.ok(typeof r.json.error === 'string', r.text);
  });

  test('GET is not a token request', async () => {
    const res = await p.fetch(`${p.tokenUrl}?grant_type=client_credentials`, { dispatcher: p.agent() });
    assert.ok(res.status === 404 || res.status === 405, `status ${res.status}`);
    await res.arrayBuffer();
  });
});

describe('token endpoint: client authentication failures → invalid_client', () => {
  test('unknown client and wrong secret answer 401 with WWW-Authenticate (C12)', async () => {
    for (const headers of [basic('nobody', 'x'), basic('sec', 'wrong-secret')]) {
      const r = await post('/oauth/token', 'grant_type=client_credentials', { headers });
      await expectError(r, 401, 'invalid_client');
      assert.match(r.headers.get('www-authenticate') ?? '', /^Basic/);
    }
  });

  test('tls_client_auth without a certificate (F02)', async () => {
    await expectError(
      await post('/oauth/token', 'grant_type=client_credentials&client_id=tcu'),
      [400, 401],
      'invalid_client',
    );
  });

  test('tls_client_auth with a certificate from another CA, same CN', async () => {
    const ca = await createCa('rogue CA', 10);
    const rogue = await issueLeaf(ca, { commonName: 'tcu', usage: 'client', validDays: 10 });
    const r = await post('/oauth/token', 'grant_type=client_credentials&client_id=tcu', {
      cert: { cert: rogue.certPem, key: rogue.keyPem },
    });
    await expectError(r, [400, 401], 'invalid_client');
  });

  test("tls_client_auth with another client's certificate (F03)", async () => {
    const other = readPair(
      await p.register('other-tcu', { auth: 'tls_client_auth', scope: 'system/*.rs', out: join(p.dataDir, 'o') }),
    );
    const r = await post('/oauth/token', 'grant_type=client_credentials&client_id=tcu', { cert: other });
    await expectError(r, [400, 401], 'invalid_client');
  });

  test('a disabled client cannot get tokens; re-enabled it can', async () => {
    const ok = await post('/oauth/token', 'grant_type=client_credentials&client_id=tcu', { cert: tlsPair });
    assert.equal(ok.status, 200, ok.text);
    await p.clients.setDisabled('tcu', true);
    await expectError(
      await post('/oauth/token', 'grant_type=client_credentials&client_id=tcu', { cert: tlsPair }),
      [400, 401],
      'invalid_client',
    );
    await p.clients.setDisabled('tcu', false);
    assert.equal(
      (await post('/oauth/token', 'grant_type=client_credentials&client_id=tcu', { cert: tlsPair })).status,
      200,
    );
  });

  test('a public client cannot use client_credentials (C29)', async () => {
    const r = await post('/oauth/token', 'grant_type=client_credentials&client_id=public-app');
    await expectError(r, 400, 'unauthorized_client');
  });
});

describe('token endpoint: bad client assertions → invalid_client (E02 E04–E12)', () => {
  test('a valid RS384 assertion works (baseline)', async () => {
    const r = await post('/oauth/token', assertionBody(await assertion()));
    assert.equal(r.status, 200, r.text);
  });

  const cases: [string, () => Promise<string>][] = [
    ['expired (E08)', () => assertion({ exp: Math.floor(Date.now() / 1000) - 60 })],
    ['lives longer than 5 minutes (E07)', () => assertion({ exp: Math.floor(Date.now() / 1000) + 600 })],
    ['iss ≠ sub (E06)', () => assertion({ sub: 'someone-else' })],
    ['unknown iss (E06)', () => assertion({ iss: 'stranger', sub: 'stranger' })],
    ['wrong aud (E05)', () => assertion({ aud: 'https://elsewhere.example/token' })],
    ['unknown kid (E11)', () => assertion({}, { kid: 'nope' })],
    ['jku not the registered JWKS URL (E10)', () => assertion({}, { jku: 'https://evil.example/jwks' })],
    [
      'signed with an unregistered key (E04)',
      async () => {
        const { privateKey } = await generateKeyPair('RS384');
        const now = Math.floor(Date.now() / 1000);
        return new SignJWT({
          iss: 'jwt-client',
          sub: 'jwt-client',
          aud: p.tokenUrl,
          jti: crypto.randomUUID(),
          exp: now + 60,
        })
          .setProtectedHeader({ alg: 'RS384', kid: 'rsa1' })
          .sign(privateKey);
      },
    ],
    [
      'alg none (E12)',
      async () => {
        const now = Math.floor(Date.now() / 1000);
        const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
        return `${enc({ alg: 'none', kid: 'rsa1' })}.${enc({ iss: 'jwt-client', sub: 'jwt-client', aud: p.tokenUrl, jti: crypto.randomUUID(), exp: now + 60 })}.`;
      },
    ],
    [
      'HS256 signed with the public key as secret (E12)',
      async () => {
        const now = Math.floor(Date.now() / 1000);
        const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
        const input = `${enc({ alg: 'HS256', kid: 'rsa1' })}.${enc({ iss: 'jwt-client', sub: 'jwt-client', aud: p.tokenUrl, jti: crypto.randomUUID(), exp: now + 60 })}`;
        return `${input}.${createHmac('sha256', rsaPublicPem).update(input).digest('base64url')}`;
      },
    ],
  ];
  for (const [name, make] of cases) {
    test(name, async () => {
      await expectError(await post('/oauth/token', assertionBody(await make())), [400, 401], 'invalid_client');
    });
  }

  test('wrong client_assertion_type (E02)', async () => {
    const jwt = await assertion();
    const r = await post(
      '/oauth/token',
      `grant_type=client_credentials&client_assertion_type=not_an_assertion_type&client_assertion=${jwt}`,
    );
    assert.ok(r.status === 400 || r.status === 401, r.text);
    assert.ok(['invalid_request', 'invalid_client'].includes(r.json.error as string), r.text);
  });
});

test('an assertion made for another server is refused, whatever Host or X-Forwarded-Host the request names', async () => {
  // Audience injection: a server the client also authenticates to replays the client's assertion here, naming its
  // own host, so that "this server's token endpoint" (as a request URL makes it) is the one the assertion is for.
  const elsewhere = 'elsewhere.example:8443';
  const named: Record<string, string>[] = [
    { host: elsewhere },
    { 'x-forwarded-host': elsewhere, 'x-forwarded-proto': 'https' },
  ];
  for (const headers of named) {
    for (const aud of [`https://${elsewhere}/oauth/token`, `https://${elsewhere}`]) {
      const r = await rawPost('/oauth/token', assertionBody(await assertion({ aud })), headers);
      assert.equal(r.status, 401, r.text);
      assert.equal(JSON.parse(r.text).error, 'invalid_client');
    }
  }
  // This server's own names still work, as the issuer and as its token endpoint.
  for (const aud of [p.tokenUrl, p.base]) {
    const r = await rawPost('/oauth/token', assertionBody(await assertion({ aud })), {});
    assert.equal(r.status, 200, r.text);
  }
});

describe('token endpoint: scope, resource and IUA parameters', () => {
  test('an unregistered scope → invalid_scope naming it (E13)', async () => {
    const r = await post(
      '/oauth/token',
      'grant_type=client_credentials&scope=system/Patient.rs%20system/Observation.rs',
      {
        headers: basic('sec', secret),
      },
    );
    await expectError(r, 400, 'invalid_scope');
    assert.equal(r.json.scope, 'system/Observation.rs');
  });

  test('a broader permission than registered → invalid_scope (system/Patient.cruds)', async () => {
    const r = await post('/oauth/token', 'grant_type=client_credentials&scope=system/Patient.cruds', {
      headers: basic('sec', secret),
    });
    await expectError(r, 400, 'invalid_scope');
  });

  test('a malformed SMART scope (.dus, out of order) is never granted (B17)', async () => {
    const r = await post('/oauth/token', 'grant_type=client_credentials&client_id=tcu&scope=system/Observation.dus', {
      cert: tlsPair,
    });
    await expectError(r, 400, 'invalid_scope');
  });

  test('a scope naming a JavaScript property (.constructor, .__proto__) is invalid_scope, not a server error', async () => {
    for (const perms of ['constructor', 'toString', '__proto__']) {
      const r = await post('/oauth/token', `grant_type=client_credentials&scope=system/Observation.${perms}`, {
        headers: basic('sec', secret),
      });
      await expectError(r, 400, 'invalid_scope');
    }
  });

  test('a resource this server does not serve → invalid_target', async () => {
    const r = await post('/oauth/token', 'grant_type=client_credentials&resource=https://evil.example/fhir', {
      headers: basic('sec', secret),
    });
    await expectError(r, 400, 'invalid_target');
  });

  test('purpose_of_use must be one the client is registered for', async () => {
    const ok = await post('/oauth/token', 'grant_type=client_credentials&purpose_of_use=TREAT', {
      headers: basic('sec', secret),
    });
    assert.equal(ok.status, 200, ok.text);
    const bad = await post('/oauth/token', 'grant_type=client_credentials&purpose_of_use=HMARKT', {
      headers: basic('sec', secret),
    });
    await expectError(bad, 400, 'invalid_request');
  });
});

describe('introspection and revocation: callers and methods', () => {
  test('introspection without client authentication is refused (G07)', async () => {
    const r = await post('/oauth/introspect', 'token=whatever');
    await expectError(r, 401, 'invalid_client');
    assert.match(r.headers.get('www-authenticate') ?? '', /^Basic/);
    assert.equal(r.json.active, undefined);
  });

  test('a public client learns nothing from introspection', async () => {
    const token = (await post('/oauth/token', 'grant_type=client_credentials', { headers: basic('sec', secret) })).json
      .access_token as string;
    const r = await post('/oauth/introspect', `token=${token}&client_id=public-app`);
    if (r.status === 200) assert.deepEqual(r.json, { active: false });
    else assert.ok(r.status === 400 || r.status === 401, r.text);
  });

  test('GET on the introspection endpoint never evaluates the token (G08)', async () => {
    const res = await p.fetch(`${p.base}/oauth/introspect?token=x`, { dispatcher: p.agent() });
    assert.ok([404, 405].includes(res.status), `status ${res.status}`);
    await res.arrayBuffer();
  });

  test('revoking an unknown token answers 200 (H02)', async () => {
    const r = await post('/oauth/revoke', 'token=unknown-token', { headers: basic('sec', secret) });
    assert.equal(r.status, 200, r.text);
  });
});
