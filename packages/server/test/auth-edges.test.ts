import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { connect } from 'node:tls';
import { exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { loadConfig } from '../src/config/index.ts';
import { createCa, issueLeaf } from '../src/pki/x509.ts';
import { auditEvents, secretClient } from './helpers/fhir.ts';
import { decodeJwt, readPair, startPlatform, type TestPlatform } from './helpers/platform.ts';

// Edges of the authorization server: proxy-forwarded certificates, jwks_uri clients, TLS versions,
// token parameters, and what reaches the logs.
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

async function post(
  p: TestPlatform,
  path: string,
  body: string,
  headers: Record<string, string> = {},
  cert?: { cert: string; key: string },
) {
  const res = await p.fetch(`${p.base}${path}`, {
    method: 'POST',
    dispatcher: p.agent(cert),
    headers: { ...FORM, ...headers },
    body,
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, json, text };
}

describe('behind a TLS-terminating proxy (--trusted-cert-header)', () => {
  let p: TestPlatform;
  let pair: { cert: string; key: string };

  before(async () => {
    p = await startPlatform({ trustedCertHeader: 'X-SSL-Client-Cert' });
    pair = readPair(
      await p.register('proxied', { auth: 'tls_client_auth', scope: 'system/*.rs', out: join(p.dataDir, 'o') }),
    );
  });
  after(() => p.stop());

  test('a CA-issued certificate in the header authenticates and binds the token', async () => {
    const r = await post(p, '/oauth/token', 'grant_type=client_credentials&client_id=proxied', {
      'x-ssl-client-cert': encodeURIComponent(pair.cert),
    });
    assert.equal(r.status, 200, r.text);
    assert.ok((decodeJwt(r.json.access_token as string).payload.cnf as Record<string, string>)['x5t#S256']);
  });

  test('a certificate from another CA in the header is refused', async () => {
    const rogue = await issueLeaf(await createCa('rogue', 1), { commonName: 'proxied', usage: 'client', validDays: 1 });
    const r = await post(p, '/oauth/token', 'grant_type=client_credentials&client_id=proxied', {
      'x-ssl-client-cert': encodeURIComponent(rogue.certPem),
    });
    assert.equal(r.json.error, 'invalid_client', r.text);
  });

  test('garbage in the header is refused, not a server error', async () => {
    const r = await post(p, '/oauth/token', 'grant_type=client_credentials&client_id=proxied', {
      'x-ssl-client-cert': '%%%not-pem',
    });
    assert.equal(r.json.error, 'invalid_client', r.text);
  });
});

/** The network address of the newest token event (ITI-71) of `client`, as the audit trail holds it. */
async function tokenEventAddress(p: TestPlatform, client: string): Promise<string | undefined> {
  const auditor = await secretClient(p, `auditor-${client}`, 'system/AuditEvent.rs');
  const events = await auditEvents<{
    subtype?: { code?: string }[];
    agent: { network?: { address?: string } }[];
  }>(p, auditor, `agent=${client}`);
  return events.find((e) => e.subtype?.[0]?.code === 'ITI-71')?.agent[0]?.network?.address;
}

describe('forwarded headers are believed from trusted proxies only (--trusted-proxies)', () => {
  test("behind the proxy: the address it appended is the client's, not one the client put before it", async () => {
    const p = await startPlatform({ trustedCertHeader: 'X-SSL-Client-Cert' });
    try {
      const { client_secret } = await p.register('forwarded', { auth: 'client_secret_basic', scope: 'system/*.rs' });
      const r = await post(p, '/oauth/token', 'grant_type=client_credentials', {
        authorization: `Basic ${Buffer.from(`forwarded:${client_secret}`).toString('base64')}`,
        'x-forwarded-for': '203.0.113.9, 198.51.100.7',
      });
      assert.equal(r.status, 200, r.text);
      assert.equal(await tokenEventAddress(p, 'forwarded'), '198.51.100.7');
    } finally {
      await p.stop();
    }
  });

  test("from any other peer, the certificate header and X-Forwarded-For are the client's own word", async () => {
    // The proxies are elsewhere: this loopback connection is a client that reached the node directly.
    const p = await startPlatform({ trustedCertHeader: 'X-SSL-Client-Cert', trustedProxies: '10.0.0.0/8, fd00::/8' });
    try {
      const pair = readPair(
        await p.register('direct', { auth: 'tls_client_auth', scope: 'system/*.rs', out: join(p.dataDir, 'o') }),
      );
      const copied = await post(p, '/oauth/token', 'grant_type=client_credentials&client_id=direct', {
        'x-ssl-client-cert': encodeURIComponent(pair.cert),
        'x-forwarded-for': '198.51.100.7',
      });
      assert.equal(copied.json.error, 'invalid_client', 'a copy of the certificate is not its key');
      const own = await post(p, '/oauth/token', 'grant_type=client_credentials&client_id=direct', {}, pair);
      assert.equal(own.status, 200, `the connection's own certificate still counts: ${own.text}`);
      assert.equal(await tokenEventAddress(p, 'direct'), '127.0.0.1');
    } finally {
      await p.stop();
    }
  });

  test('the server says at start which proxies it believes', async () => {
    const logs = new PassThrough();
    let text = '';
    logs.on('data', (d) => {
      text += d;
    });
    const p = await startPlatform(
      { trustedCertHeader: 'X-SSL-Client-Cert', trustedProxies: '10.0.4.0/24', logLevel: 'warn' },
      { logStream: logs },
    );
    await p.stop();
    assert.match(text, /forwarded client addresses and certificates are believed from 10\.0\.4\.0\/24 only/);
  });

  test('the list: loopback by default with the header, none without it; a bad entry is a clear error', () => {
    assert.deepEqual(loadConfig({ trustedCertHeader: 'X-SSL-Client-Cert' }, {}).trustedProxies, [
      '127.0.0.0/8',
      '::1/128',
    ]);
    assert.equal(loadConfig({}, {}).trustedProxies, undefined);
    assert.deepEqual(loadConfig({}, { CAREVAULT_TRUSTED_PROXIES: '10.0.0.5, 10.1.0.0/16' }).trustedProxies, [
      '10.0.0.5',
      '10.1.0.0/16',
    ]);
    for (const bad of ['10.0.0.0/33', 'proxy.internal', '10.0.0.1/8/1', '::1/129', '10.0.0.0/x']) {
      assert.throws(
        () => loadConfig({ trustedProxies: bad }, {}),
        /trusted proxies: .* (is not an IP address or CIDR range|has an invalid prefix length)/,
      );
    }
  });
});

describe('the header is ignored unless configured', () => {
  test('a forwarded certificate does not authenticate a direct connection', async () => {
    const p = await startPlatform();
    try {
      const pair = readPair(
        await p.register('direct', { auth: 'tls_client_auth', scope: 'system/*.rs', out: join(p.dataDir, 'o') }),
      );
      const r = await post(p, '/oauth/token', 'grant_type=client_credentials&client_id=direct', {
        'x-ssl-client-cert': encodeURIComponent(pair.cert),
      });
      assert.equal(r.json.error, 'invalid_client', r.text);
    } finally {
      await p.stop();
    }
  });
});

describe('everything else', () => {
  let p: TestPlatform;
  const logs = new PassThrough();
  let logText = '';
  let jwksServer: Server;
  let jwksUrl: string;
  let served: { keys: JWK[] } = { keys: [] };
  const flood = { closed: 0, bytes: 0 };
  const jwksRequests: { accept: string | undefined }[] = [];
  let k1: CryptoKey;
  let k2: CryptoKey;
  let secret: string;

  before(async () => {
    logs.on('data', (d) => {
      logText += d;
    });
    p = await startPlatform({ logLevel: 'debug' }, { logStream: logs });
    const a = await generateKeyPair('ES384');
    const b = await generateKeyPair('ES384');
    k1 = a.privateKey;
    k2 = b.privateKey;
    served = { keys: [{ ...(await exportJWK(a.publicKey)), kid: 'k1', alg: 'ES384' }] };
    jwksServer = createServer({ key: p.pki.server.keyPem, cert: p.pki.server.certPem }, (req, res) => {
      if (req.url === '/flood.json') {
        // A key set without end: the server must stop reading, not fill its memory.
        res.writeHead(200, { 'content-type': 'application/json' }).write('{"keys":[');
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        const pump = () => {
          for (let more = true; more && !res.destroyed; flood.bytes += chunk.length) more = res.write(chunk);
        };
        res.on('drain', pump).on('error', () => {});
        res.on('close', () => flood.closed++);
        return pump();
      }
      jwksRequests.push({ accept: req.headers.accept });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(served));
    });
    await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
    jwksUrl = `https://localhost:${(jwksServer.address() as { port: number }).port}/jwks.json`;
    await p.register('remote-keys', { auth: 'private_key_jwt', jwksUri: jwksUrl, scope: 'system/*.rs' });
    await p.register('flooded-keys', {
      auth: 'private_key_jwt',
      jwksUri: jwksUrl.replace('/jwks.json', '/flood.json'),
      scope: 'system/*.rs',
    });
    secret = (await p.register('logged', { auth: 'client_secret_basic', scope: 'system/*.rs' }))
      .client_secret as string;
  });
  after(async () => {
    jwksServer.closeAllConnections();
    await new Promise((r) => jwksServer.close(r));
    await p.stop();
  });

  async function assertionFor(key: CryptoKey, kid: string, client = 'remote-keys') {
    const now = Math.floor(Date.now() / 1000);
    const jwt = await new SignJWT({
      iss: client,
      sub: client,
      aud: p.tokenUrl,
      jti: crypto.randomUUID(),
      exp: now + 60,
    })
      .setProtectedHeader({ alg: 'ES384', kid })
      .sign(key);
    return `grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=${jwt}`;
  }

  test('a jwks_uri client: the AS fetches its JWKS as JSON, and caches it; unpublished keys fail (E14)', async () => {
    assert.equal((await post(p, '/oauth/token', await assertionFor(k1, 'k1'))).status, 200);
    assert.ok(jwksRequests.length >= 1);
    assert.match(jwksRequests[0]?.accept ?? '', /application\/(jwk-set\+)?json/);
    const fetched = jwksRequests.length;
    assert.equal((await post(p, '/oauth/token', await assertionFor(k1, 'k1'))).status, 200);
    assert.equal(jwksRequests.length, fetched, 'the JWKS is cached between requests');
    // A key the client has not published yet is refused (the engine re-fetches a jwks_uri at most once a minute).
    const r = await post(p, '/oauth/token', await assertionFor(k2, 'k2'));
    assert.equal(r.json.error, 'invalid_client', r.text);
  });

  test('a jwks_uri that answers without end: invalid_client, the download given up at 1 MiB', async () => {
    const r = await post(p, '/oauth/token', await assertionFor(k1, 'k1', 'flooded-keys'));
    assert.equal(r.json.error, 'invalid_client', r.text);
    for (let i = 0; i < 100 && flood.closed === 0; i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(flood.closed, 1);
    // Given up at the limit (≈ 1.1 MB sent here), not at the engine's own timeout of the download (≈ 190 MB in 2.5 s).
    assert.ok(flood.bytes < 16 * 1024 * 1024, `${flood.bytes} bytes sent`);
    assert.equal((await post(p, '/oauth/token', await assertionFor(k1, 'k1'))).status, 200);
  });

  test('requested_token_type: JWT is accepted, SAML is invalid_request (C28 C30)', async () => {
    const auth = { authorization: `Basic ${Buffer.from(`logged:${secret}`).toString('base64')}` };
    const ok = await post(
      p,
      '/oauth/token',
      'grant_type=client_credentials&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt',
      auth,
    );
    assert.equal(ok.status, 200, ok.text);
    const saml = await post(
      p,
      '/oauth/token',
      'grant_type=client_credentials&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Asaml2',
      auth,
    );
    assert.equal(saml.status, 400);
    assert.equal(saml.json.error, 'invalid_request');
  });

  test('resource = a vault under the FHIR base gives a token for that vault only (D03)', async () => {
    const auth = { authorization: `Basic ${Buffer.from(`logged:${secret}`).toString('base64')}` };
    const r = await post(
      p,
      '/oauth/token',
      `grant_type=client_credentials&resource=${encodeURIComponent(`${p.fhirBase}/alice_1234`)}`,
      auth,
    );
    assert.equal(r.status, 200, r.text);
    assert.equal(decodeJwt(r.json.access_token as string).payload.aud, `${p.fhirBase}/alice_1234`);
    const bad = await post(
      p,
      '/oauth/token',
      `grant_type=client_credentials&resource=${encodeURIComponent(`${p.fhirBase}/../admin`)}`,
      auth,
    );
    assert.equal(bad.json.error, 'invalid_target', bad.text);
  });

  test('revocation ignores an unknown token_type_hint (H05)', async () => {
    const auth = { authorization: `Basic ${Buffer.from(`logged:${secret}`).toString('base64')}` };
    const token = (await post(p, '/oauth/token', 'grant_type=client_credentials', auth)).json.access_token as string;
    const r = await post(p, '/oauth/revoke', `token=${token}&token_type_hint=foo`, auth);
    assert.ok(r.status === 200 || r.json.error === 'unsupported_token_type', r.text);
    if (r.status === 200) {
      const i = await post(p, '/oauth/introspect', `token=${token}`, auth);
      assert.equal(i.json.active, false);
    }
  });

  test('TLS below 1.2 is refused (E15)', async () => {
    const port = Number(new URL(p.base).port);
    const outcome = await new Promise<string>((resolve) => {
      const s = connect({
        host: '127.0.0.1',
        port,
        maxVersion: 'TLSv1.1',
        minVersion: 'TLSv1',
        ciphers: 'DEFAULT@SECLEVEL=0',
        rejectUnauthorized: false,
      });
      s.once('secureConnect', () => {
        s.destroy();
        resolve('connected');
      });
      s.once('error', (err) => resolve(err.message));
    });
    assert.notEqual(outcome, 'connected');
  });

  test('no token, secret, assertion or key reaches the logs, even at debug level', async () => {
    const auth = { authorization: `Basic ${Buffer.from(`logged:${secret}`).toString('base64')}` };
    const token = (await post(p, '/oauth/token', 'grant_type=client_credentials', auth)).json.access_token as string;
    await post(p, '/oauth/introspect', `token=${token}`, auth);
    const res = await p.fetch(`${p.base}/oauth/introspect?token=${token}&access_token=${token}`, {
      dispatcher: p.agent(),
    });
    await res.arrayBuffer();
    const assertion = await assertionFor(k1, 'k1');
    await post(p, '/oauth/token', assertion);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(logText.includes('/oauth/introspect'), 'requests are logged');
    const signature = token.split('.')[2] as string;
    assert.ok(!logText.includes(signature), 'access token not logged');
    assert.ok(!logText.includes(secret), 'client secret not logged');
    assert.ok(!logText.includes(Buffer.from(`logged:${secret}`).toString('base64')), 'basic credentials not logged');
    assert.ok(!logText.includes(assertion.split('.')[2] as string), 'client assertion not logged');
    for (const k of p.keys.privateJwks()) assert.ok(!logText.includes(k.d as string), 'private key not logged');
  });
});
