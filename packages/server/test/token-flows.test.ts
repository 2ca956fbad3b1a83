import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import * as client from 'openid-client';
import { answerStructuredTokensWithoutThrowing } from '../src/auth/structured-tokens.ts';
import { discover } from './helpers/oidc-client.ts';
import { decodeJwt, readPair, startPlatform, type TestPlatform } from './helpers/platform.ts';

// Machine-to-machine flows (ITI-71/102, SMART Backend Services, RFC 8705) driven by openid-client over HTTPS.
let p: TestPlatform;

before(async () => {
  p = await startPlatform();
});
after(async () => {
  await p.stop();
});

function thumbprint(certPem: string): string {
  return createHash('sha256').update(new X509Certificate(certPem).raw).digest('base64url');
}

describe('client_credentials with tls_client_auth (seed 000, rows F01 F05 D06)', () => {
  test('a CA-issued certificate authenticates and the access token is bound to it', async () => {
    const out = await p.register('bestclinic-tcu', {
      auth: 'tls_client_auth',
      scope: 'system/*.rs ns:cara:scp.Contributor',
      orgOid: '2.16.840.1.113883.2.4.6.1.12345',
      orgName: 'Best Clinic',
      purposeOfUse: ['TREAT'],
      out: join(p.dataDir, 'out'),
    });
    const pair = readPair(out);
    const cert = new X509Certificate(pair.cert);
    assert.equal(cert.subject, 'CN=bestclinic-tcu');
    assert.ok(cert.verify(new X509Certificate(p.ca).publicKey), 'client certificate is signed by the platform CA');

    const config = await discover(p.base, 'bestclinic-tcu', client.TlsClientAuth(), p.agent(pair));
    // Seed 000 sends only grant_type and client_id: every registered scope is granted.
    const tokens = await client.clientCredentialsGrant(config);
    assert.equal(tokens.token_type.toLowerCase(), 'bearer');
    assert.equal(tokens.expires_in, 300);
    assert.equal(tokens.scope, 'system/*.rs ns:cara:scp.Contributor');

    const { header, payload } = decodeJwt(tokens.access_token);
    assert.equal(header.typ, 'at+jwt');
    assert.equal(header.alg, 'ES256');
    assert.ok(typeof header.kid === 'string');
    assert.equal(payload.iss, p.issuer);
    assert.equal(payload.sub, 'bestclinic-tcu');
    assert.equal(payload.client_id, 'bestclinic-tcu');
    assert.equal(payload.aud, p.fhirBase);
    assert.equal((payload.exp as number) - (payload.iat as number), 300);
    assert.ok(typeof payload.jti === 'string' && (payload.jti as string).length >= 20);
    assert.deepEqual(payload.cnf, { 'x5t#S256': thumbprint(pair.cert) });
    assert.deepEqual(payload.extensions, {
      ihe_iua: {
        subject_organization_id: 'urn:oid:2.16.840.1.113883.2.4.6.1.12345',
        subject_organization: 'Best Clinic',
        purpose_of_use: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }],
      },
    });
  });

  test('a narrower SMART scope than the registered wildcard is granted as asked', async () => {
    const out = await p.register('narrow-tcu', {
      auth: 'tls_client_auth',
      scope: 'system/*.rs',
      out: join(p.dataDir, 'out'),
    });
    const config = await discover(p.base, 'narrow-tcu', client.TlsClientAuth(), p.agent(readPair(out)));
    const tokens = await client.clientCredentialsGrant(config, { scope: 'system/Observation.rs system/Patient.read' });
    assert.equal(tokens.scope, 'system/Observation.rs system/Patient.read');
  });

  test('self_signed_tls_client_auth binds the token to the registered self-signed certificate (F04)', async () => {
    const out = await p.register('selfsigned', {
      auth: 'self_signed_tls_client_auth',
      scope: 'system/Patient.rs',
      out: join(p.dataDir, 'out'),
    });
    const pair = readPair(out);
    const config = await discover(p.base, 'selfsigned', client.TlsClientAuth(), p.agent(pair));
    const tokens = await client.clientCredentialsGrant(config);
    assert.deepEqual(decodeJwt(tokens.access_token).payload.cnf, { 'x5t#S256': thumbprint(pair.cert) });
  });

  test('a TLS 1.2 client cannot renegotiate: a connection keeps the certificate of its handshake', async () => {
    // The server reads a connection's certificate once (auth/mtls.ts); a renegotiation could present another.
    const pair = readPair(
      await p.register('reneg-tcu', { auth: 'tls_client_auth', scope: 'system/*.rs', out: join(p.dataDir, 'out') }),
    );
    const { port, hostname } = new URL(p.base);
    const socket = tls.connect({
      host: hostname,
      port: Number(port),
      servername: 'localhost',
      ca: p.ca,
      ...pair,
      maxVersion: 'TLSv1.2',
    });
    await once(socket, 'secureConnect');
    socket.on('error', () => {});
    const outcome = await new Promise<string>((resolve) => {
      socket.once('close', () => resolve('closed by the server'));
      socket.renegotiate({ rejectUnauthorized: true }, (err) => resolve(err ? 'refused' : 'renegotiated'));
    });
    assert.notEqual(outcome, 'renegotiated');
    socket.destroy();
  });
});

describe('client_credentials with private_key_jwt (SMART Backend Services, rows E01 E09)', () => {
  let privateKey: CryptoKey;

  before(async () => {
    const pair = await generateKeyPair('ES384', { extractable: true });
    privateKey = pair.privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES384', use: 'sig' };
    const file = join(p.dataDir, 'backend-jwks.json');
    writeFileSync(file, JSON.stringify({ keys: [jwk] }));
    await p.register('backend', { auth: 'private_key_jwt', jwks: file, scope: 'system/*.rs', orgOid: '1.2.3.4' });
  });

  test("openid-client's default assertion (aud = issuer) is accepted", async () => {
    const config = await discover(p.base, 'backend', client.PrivateKeyJwt({ key: privateKey, kid: 'k1' }), p.agent());
    const tokens = await client.clientCredentialsGrant(config, { scope: 'system/Observation.rs' });
    assert.equal(tokens.scope, 'system/Observation.rs');
    assert.equal(tokens.expires_in, 300);
    assert.equal(tokens.refresh_token, undefined, 'backend services get no refresh token (E01)');
    const { payload } = decodeJwt(tokens.access_token);
    assert.equal(payload.cnf, undefined, 'no certificate, no binding');
    assert.deepEqual(payload.extensions, { ihe_iua: { subject_organization_id: 'urn:oid:1.2.3.4' } });
  });

  test('an assertion with aud = token endpoint and typ JWT is accepted (SMART shape)', async () => {
    const auth = client.PrivateKeyJwt(
      { key: privateKey, kid: 'k1' },
      {
        [client.modifyAssertion]: (header, payload) => {
          header.typ = 'JWT';
          payload.aud = p.tokenUrl;
        },
      },
    );
    const config = await discover(p.base, 'backend', auth, p.agent());
    const tokens = await client.clientCredentialsGrant(config, { scope: 'system/Patient.rs' });
    assert.equal(tokens.scope, 'system/Patient.rs');
  });

  test('a replayed assertion (same jti) is refused with invalid_client', async () => {
    const auth = client.PrivateKeyJwt(
      { key: privateKey, kid: 'k1' },
      {
        [client.modifyAssertion]: (_h, payload) => {
          payload.jti = 'fixed-jti-for-replay';
        },
      },
    );
    const config = await discover(p.base, 'backend', auth, p.agent());
    await client.clientCredentialsGrant(config);
    await assert.rejects(client.clientCredentialsGrant(config), (err: client.ResponseBodyError) => {
      assert.equal(err.error, 'invalid_client');
      assert.equal(err.status, 401);
      return true;
    });
  });

  test('one assertion sent six times at once: exactly one token, five invalid_client', async () => {
    // The jti claims of concurrent requests share one commit; they must still see each other.
    const assertion = await new SignJWT({ iss: 'backend', sub: 'backend', aud: p.tokenUrl, jti: `race-${Date.now()}` })
      .setProtectedHeader({ alg: 'ES384', kid: 'k1' })
      .setIssuedAt()
      .setExpirationTime('2m')
      .sign(privateKey);
    const body = new URLSearchParams({
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    }).toString();
    const answers = await Promise.all(
      Array.from({ length: 6 }, async () => {
        const res = await p.fetch(p.tokenUrl, {
          method: 'POST',
          dispatcher: p.agent(),
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body,
        });
        return { status: res.status, json: (await res.json()) as { error?: string } };
      }),
    );
    assert.deepEqual(answers.map((a) => a.status).sort(), [200, 401, 401, 401, 401, 401]);
    assert.equal(answers.filter((a) => a.json.error === 'invalid_client').length, 5);
  });
});

describe('client_credentials with client_secret_basic (IUA 3.71.4.1.2.1, C11 C28)', () => {
  test('the secret authenticates; the token response carries no-store and no-cache', async () => {
    const out = await p.register('secret-client', { auth: 'client_secret_basic', scope: 'system/*.rs' });
    assert.ok(out.client_secret && out.client_secret.length >= 40);
    const config = await discover(p.base, 'secret-client', client.ClientSecretBasic(out.client_secret), p.agent());
    const tokens = await client.clientCredentialsGrant(config, { resource: p.fhirBase });
    assert.equal(decodeJwt(tokens.access_token).payload.aud, p.fhirBase);

    const res = await p.fetch(p.tokenUrl, {
      method: 'POST',
      dispatcher: p.agent(),
      headers: {
        authorization: `Basic ${Buffer.from(`secret-client:${out.client_secret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'grant_type=client_credentials',
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(res.headers.get('pragma'), 'no-cache');
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.token_type, 'Bearer');
    assert.equal(typeof body.expires_in, 'number');
  });

  test('a client registered for RS256 gets RS256-signed tokens from the published RSA key (X3)', async () => {
    const out = await p.register('rsa-client', {
      auth: 'client_secret_basic',
      scope: 'system/Patient.rs',
      tokenAlg: 'RS256',
    });
    const config = await discover(p.base, 'rsa-client', client.ClientSecretBasic(out.client_secret), p.agent());
    const tokens = await client.clientCredentialsGrant(config);
    const { header } = decodeJwt(tokens.access_token);
    assert.equal(header.alg, 'RS256');
    assert.equal(header.typ, 'at+jwt');
    const jwks = (await (await p.fetch(`${p.base}/oauth/jwks`, { dispatcher: p.agent() })).json()) as {
      keys: { kid: string; kty: string }[];
    };
    assert.equal(jwks.keys.find((k) => k.kid === header.kid)?.kty, 'RSA');
    assert.equal((await p.auth.verifier.verify(tokens.access_token)).client_id, 'rsa-client');
  });

  test('the stored secret is a hash, not the secret', async () => {
    const out = await p.register('hash-check', { auth: 'client_secret_post', scope: 'system/Patient.rs' });
    const record = await p.store.clients.get('hash-check');
    const stored = JSON.stringify(record);
    assert.ok(!stored.includes(out.client_secret as string), 'plain secret must not be stored');
    const listed = JSON.stringify(await p.clients.describe('hash-check'));
    assert.ok(!listed.includes('sha256:'), 'client show must not print the secret hash');
  });
});

describe('introspection (ITI-102) and revocation (RFC 7009) through openid-client', () => {
  let rs: client.Configuration;
  let holder: client.Configuration;

  before(async () => {
    const rsOut = await p.register('resource-server', {
      auth: 'client_secret_basic',
      scope: 'system/Patient.rs',
      resourceServer: true,
    });
    rs = await discover(p.base, 'resource-server', client.ClientSecretBasic(rsOut.client_secret), p.agent());
    const out = await p.register('holder', {
      auth: 'tls_client_auth',
      scope: 'system/*.rs',
      orgOid: '2.999.1',
      out: join(p.dataDir, 'out'),
    });
    holder = await discover(p.base, 'holder', client.TlsClientAuth(), p.agent(readPair(out)));
  });

  test('an active JWT access token introspects with its claims, IUA extensions and cnf (G01 F08)', async () => {
    const tokens = await client.clientCredentialsGrant(holder);
    const info = await client.tokenIntrospection(rs, tokens.access_token);
    const jwt = decodeJwt(tokens.access_token).payload;
    assert.equal(info.active, true);
    assert.equal(info.client_id, 'holder');
    assert.equal(info.sub, 'holder');
    assert.equal(info.scope, 'system/*.rs');
    assert.equal(info.iss, p.issuer);
    assert.equal(info.aud, p.fhirBase);
    assert.equal(info.exp, jwt.exp, 'exp is the token exp (G09)');
    assert.equal(info.jti, jwt.jti);
    assert.deepEqual((info as Record<string, unknown>).extensions, {
      ihe_iua: { subject_organization_id: 'urn:oid:2.999.1' },
    });
    assert.deepEqual(info.cnf, jwt.cnf);
  });

  test("JWTs reach carevault's introspection and revocation without the engine's exception path", () => {
    // Both engine action lists still hold the step this replaces; an engine upgrade that moved it fails here.
    assert.equal(answerStructuredTokensWithoutThrowing(), 2);
  });

  test('garbage and unknown tokens are {"active":false} and nothing else (G03 G04)', async () => {
    for (const token of ['garbage', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.', 'a.b.c']) {
      const info = await client.tokenIntrospection(rs, token);
      assert.deepEqual(info, { active: false });
    }
  });

  test('a revoked JWT access token is inactive afterwards and refused by the verifier (H01 G06)', async () => {
    const tokens = await client.clientCredentialsGrant(holder);
    await p.auth.verifier.verify(tokens.access_token, { checkBinding: false });
    await client.tokenRevocation(holder, tokens.access_token);
    assert.deepEqual(await client.tokenIntrospection(rs, tokens.access_token), { active: false });
    await assert.rejects(p.auth.verifier.verify(tokens.access_token, { checkBinding: false }), /revoked/);
  });

  test("a client cannot revoke another client's token; the token stays active (H03)", async () => {
    const tokens = await client.clientCredentialsGrant(holder);
    await assert.rejects(client.tokenRevocation(rs, tokens.access_token), (err: client.ResponseBodyError) => {
      assert.equal(err.error, 'unauthorized_client');
      return true;
    });
    assert.equal((await client.tokenIntrospection(rs, tokens.access_token)).active, true);
  });

  test('opaque access tokens (IUA Token Introspection option) introspect and revoke too (D07)', async () => {
    const out = await p.register('opaque-client', {
      auth: 'client_secret_basic',
      scope: 'system/Observation.rs',
      tokenFormat: 'opaque',
      orgOid: '2.999.2',
    });
    const cfg = await discover(p.base, 'opaque-client', client.ClientSecretBasic(out.client_secret), p.agent());
    const tokens = await client.clientCredentialsGrant(cfg);
    assert.ok(!tokens.access_token.includes('.'), 'opaque token is not a JWT');
    const info = await client.tokenIntrospection(rs, tokens.access_token);
    assert.equal(info.active, true);
    assert.equal(info.scope, 'system/Observation.rs');
    assert.equal(info.aud, p.fhirBase);
    assert.deepEqual((info as Record<string, unknown>).extensions, {
      ihe_iua: { subject_organization_id: 'urn:oid:2.999.2' },
    });
    const claims = await p.auth.verifier.verify(tokens.access_token);
    assert.equal(claims.client_id, 'opaque-client');
    await client.tokenRevocation(cfg, tokens.access_token);
    assert.deepEqual(await client.tokenIntrospection(rs, tokens.access_token), { active: false });
    await assert.rejects(p.auth.verifier.verify(tokens.access_token), /not active/);
  });
});

describe('discovery (ITI-103, RFC 8414, OIDC)', () => {
  test('both metadata documents describe what the server does (A01 A05 A07 A08 A09 A10 A18)', async () => {
    for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
      const res = await p.fetch(`${p.base}${path}`, { dispatcher: p.agent() });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /application\/json/);
      const md = (await res.json()) as Record<string, unknown>;
      assert.equal(md.issuer, p.issuer);
      assert.equal(md.token_endpoint, p.tokenUrl);
      assert.equal(md.introspection_endpoint, `${p.base}/oauth/introspect`);
      assert.equal(md.revocation_endpoint, `${p.base}/oauth/revoke`);
      assert.equal(md.jwks_uri, `${p.base}/oauth/jwks`);
      assert.deepEqual(md.response_types_supported, ['code']);
      for (const g of ['authorization_code', 'client_credentials', 'refresh_token']) {
        assert.ok((md.grant_types_supported as string[]).includes(g), g);
      }
      for (const m of ['client_secret_basic', 'private_key_jwt', 'tls_client_auth', 'self_signed_tls_client_auth']) {
        assert.ok((md.token_endpoint_auth_methods_supported as string[]).includes(m), m);
      }
      const algs = md.token_endpoint_auth_signing_alg_values_supported as string[];
      assert.ok(algs.includes('RS384') && algs.includes('ES384'));
      assert.ok(!algs.some((a) => a.startsWith('HS') || a === 'none'));
      assert.ok(!(md.introspection_endpoint_auth_methods_supported as string[]).includes('none'));
      assert.ok((md.introspection_endpoint_auth_methods_supported as string[]).includes('tls_client_auth'));
      assert.deepEqual(md.code_challenge_methods_supported, ['S256']);
      assert.equal(md.tls_client_certificate_bound_access_tokens, true);
      assert.deepEqual(md.access_token_format, ['urn:ietf:params:oauth:token-type:jwt']);
      assert.ok((md.subject_types_supported as string[]).includes('public'));
      assert.ok((md.id_token_signing_alg_values_supported as string[]).includes('RS256'));
    }
  });

  test('the JWKS publishes public keys only, with unique kids and an RSA key (A19)', async () => {
    const res = await p.fetch(`${p.base}/oauth/jwks`, { dispatcher: p.agent() });
    const { keys } = (await res.json()) as { keys: Record<string, string>[] };
    assert.ok(keys.length >= 2);
    assert.equal(new Set(keys.map((k) => k.kid)).size, keys.length);
    assert.ok(keys.some((k) => k.kty === 'RSA' && k.n && k.e));
    assert.ok(keys.some((k) => k.kty === 'EC' && k.crv === 'P-256'));
    for (const k of keys) assert.equal(k.d, undefined, 'no private key material');
  });
});
