import assert from 'node:assert/strict';
import type { X509Certificate } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { createRemoteJWKSet, customFetch, importJWK, SignJWT } from 'jose';
import { fetch as undiciFetch } from 'undici';
import { TokenVerificationError, TokenVerifier } from '../src/auth/verifier.ts';
import { createSelfSigned } from '../src/pki/x509.ts';
import { freePort, readPair, startPlatform, type TestPlatform } from './helpers/platform.ts';

// The reusable verifier as a separate resource server would use it: remote JWKS, real HTTPS, mTLS binding.
let p: TestPlatform;
let rs: Server;
let rsUrl: string;
let remote: TokenVerifier;
let pairA: { cert: string; key: string };
let pairB: { cert: string; key: string };

async function tokenFor(pair: { cert: string; key: string }, clientId: string): Promise<string> {
  const res = await p.fetch(p.tokenUrl, {
    method: 'POST',
    dispatcher: p.agent(pair),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: `grant_type=client_credentials&client_id=${clientId}`,
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { access_token: string }).access_token;
}

before(async () => {
  p = await startPlatform();
  pairA = readPair(
    await p.register('rs-a', { auth: 'tls_client_auth', scope: 'system/*.rs', out: join(p.dataDir, 'o') }),
  );
  pairB = readPair(
    await p.register('rs-b', { auth: 'tls_client_auth', scope: 'system/*.rs', out: join(p.dataDir, 'o') }),
  );
  const jwksAgent = p.agent();
  remote = new TokenVerifier({
    issuer: p.issuer,
    audience: (aud) => aud === p.fhirBase,
    keys: (() => {
      const set = createRemoteJWKSet(new URL(`${p.base}/oauth/jwks`), {
        [customFetch]: (url, options) =>
          undiciFetch(url, { ...(options as object), dispatcher: jwksAgent }) as unknown as Promise<Response>,
      });
      return () => set;
    })(),
    isRevoked: (jti) => p.store.revocations.isRevoked(jti),
  });
  // A minimal resource server: Bearer token + the TLS client certificate, answered 200 or 401 invalid_token.
  const port = await freePort();
  rs = createServer(
    { key: p.pki.server.keyPem, cert: p.pki.server.certPem, ca: p.ca, requestCert: true, rejectUnauthorized: false },
    async (req, res) => {
      const auth = req.headers.authorization ?? '';
      const cert = (req.socket as TLSSocket).getPeerX509Certificate?.() as X509Certificate | undefined;
      try {
        const claims = await remote.verify(auth.replace(/^Bearer /, ''), { certificate: cert });
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ client: claims.client_id }));
      } catch (err) {
        const description = err instanceof TokenVerificationError ? err.message : 'error';
        res
          .writeHead(401, { 'www-authenticate': `Bearer error="invalid_token", error_description="${description}"` })
          .end();
      }
    },
  );
  await new Promise<void>((r) => rs.listen(port, '127.0.0.1', r));
  rsUrl = `https://localhost:${port}/Patient/1`;
});
after(async () => {
  rs.closeAllConnections();
  await new Promise((r) => rs.close(r));
  await p.stop();
});

async function callRs(token: string, pair?: { cert: string; key: string }) {
  const res = await undiciFetch(rsUrl, { dispatcher: p.agent(pair), headers: { authorization: `Bearer ${token}` } });
  await res.arrayBuffer();
  return { status: res.status, challenge: res.headers.get('www-authenticate') ?? '' };
}

describe('certificate-bound tokens at a resource server (RFC 8705 §3, F06 F07)', () => {
  test('the same certificate is accepted', async () => {
    const token = await tokenFor(pairA, 'rs-a');
    assert.equal((await callRs(token, pairA)).status, 200);
  });

  test('a different certificate, or none, is refused with invalid_token — also after a cached success', async () => {
    const token = await tokenFor(pairA, 'rs-a');
    assert.equal((await callRs(token, pairA)).status, 200);
    const other = await callRs(token, pairB);
    assert.equal(other.status, 401);
    assert.match(other.challenge, /invalid_token.*different client certificate/);
    const selfSigned = await createSelfSigned('rs-a', 1);
    assert.equal((await callRs(token, { cert: selfSigned.certPem, key: selfSigned.keyPem })).status, 401);
    const none = await callRs(token);
    assert.equal(none.status, 401);
    assert.match(none.challenge, /not presented/);
  });

  test('a revoked token is refused even though its signature check is cached (G10)', async () => {
    const token = await tokenFor(pairA, 'rs-a');
    assert.equal((await callRs(token, pairA)).status, 200);
    const res = await p.fetch(`${p.base}/oauth/revoke`, {
      method: 'POST',
      dispatcher: p.agent(pairA),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `token=${token}&client_id=rs-a`,
    });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    assert.equal((await callRs(token, pairA)).status, 401);
  });
});

describe('tokens the verifier refuses (I03 I04 I05 D01)', () => {
  let signingKey: CryptoKey;
  let kid: string;

  before(async () => {
    const jwk = p.keys.privateJwks().find((k) => k.alg === 'ES256');
    assert.ok(jwk?.kid);
    kid = jwk.kid;
    signingKey = (await importJWK(jwk, 'ES256')) as CryptoKey;
  });

  function sign(claims: Record<string, unknown>, header: Record<string, unknown> = {}) {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({
      iss: p.issuer,
      aud: p.fhirBase,
      sub: 'x',
      client_id: 'x',
      jti: crypto.randomUUID(),
      iat: now,
      exp: now + 60,
      ...claims,
    })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid, ...header })
      .sign(signingKey);
  }

  test('a well-formed token signed by the platform key passes (control)', async () => {
    const claims = await remote.verify(await sign({}));
    assert.equal(claims.sub, 'x');
  });

  const refusals: [string, () => Promise<string>, RegExp][] = [
    ['expired', () => sign({ exp: Math.floor(Date.now() / 1000) - 30 }), /expired/],
    ['wrong audience', () => sign({ aud: 'https://other.example/fhir' }), /audience/],
    ['wrong issuer', () => sign({ iss: 'https://evil.example' }), /iss/],
    ['typ JWT instead of at+jwt', () => sign({}, { typ: 'JWT' }), /typ/],
    ['unknown kid', () => sign({}, { kid: 'unknown' }), /unknown key|malformed/],
    ['no jti', () => sign({ jti: undefined }), /jti/],
    [
      'payload changed after signing',
      async () => {
        const [h, , s] = (await sign({})).split('.');
        const forged = Buffer.from(
          JSON.stringify({ iss: p.issuer, aud: p.fhirBase, sub: 'admin', jti: 'j', iat: 1, exp: 9_999_999_999 }),
        ).toString('base64url');
        return `${h}.${forged}.${s}`;
      },
      /signature/,
    ],
    [
      'alg none',
      async () => {
        const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
        return `${enc({ alg: 'none', typ: 'at+jwt' })}.${enc({ iss: p.issuer, aud: p.fhirBase, jti: 'j', iat: 1, exp: 9_999_999_999 })}.`;
      },
      /not active|algorithm|malformed/,
    ],
  ];
  for (const [name, make, why] of refusals) {
    test(name, async () => {
      await assert.rejects(remote.verify(await make()), (err: Error) => {
        assert.ok(err instanceof TokenVerificationError, String(err));
        assert.equal(err.code, 'invalid_token');
        assert.match(err.message, why);
        return true;
      });
    });
  }
});
