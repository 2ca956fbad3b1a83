import assert from 'node:assert/strict';
import { createPrivateKey, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import * as client from 'openid-client';
import { type Caller, fhir, partition, secretClient } from './helpers/fhir.ts';
import { crl, type Issued, issue, networkCa, networkJwt } from './helpers/network-pki.ts';
import { discover } from './helpers/oidc-client.ts';
import { decodeJwt, startPlatform, type TestPlatform } from './helpers/platform.ts';
import { cli, ok } from './helpers/zorgviewer.ts';

const FQDN = 'clinic.example.org';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

describe('trust communities: certificate-signed client assertions (seed 003)', () => {
  let p: TestPlatform;
  let ca: Issued;
  let intermediate: Issued;
  let member: Issued;
  let writer: Caller;
  let patientId: string;

  const file = (name: string, content: string) => {
    const path = join(p.dataDir, name);
    writeFileSync(path, content);
    return path;
  };
  const requestToken = async (assertion: string, o: { scope?: string; tls?: Issued } = {}) => {
    const res = await p.fetch(p.tokenUrl, {
      method: 'POST',
      dispatcher: p.agent(o.tls ? { cert: o.tls.certPem, key: o.tls.keyPem } : undefined),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'client_credentials',
        client_assertion_type: ASSERTION_TYPE,
        client_assertion: assertion,
        ...(o.scope ? { scope: o.scope } : {}),
      }).toString(),
    });
    return { status: res.status, json: (await res.json()) as Record<string, string> };
  };
  const assertion = (
    leaf: Issued,
    chain: Issued[],
    clientId = FQDN,
    o: Partial<Parameters<typeof networkJwt>[3]> = {},
  ) => networkJwt(leaf, chain, clientId, { aud: p.tokenUrl, ...o });
  /** `carevault trust add carequality` with the test network's CA and the community scopes. */
  const trustNetwork = (...extra: string[]) =>
    ok(
      p.dataDir,
      'trust',
      'add',
      'carequality',
      '--ca',
      file('ca.pem', ca.certPem),
      '--scope',
      'system/Patient.rs system/Observation.rs',
      ...extra,
    );
  const clientIds = async () => (await p.store.clients.list()).map((c) => c.clientId);

  before(async () => {
    // The CRL of a community loaded from its distribution point is fetched again every second here.
    p = await startPlatform({}, { env: { CAREVAULT_CRL_REFRESH_SECONDS: '1' } });
    ca = await networkCa('Carequality Test CA');
    intermediate = await issue(ca, 'Carequality Issuing CA 1', { ca: true });
    member = await issue(ca, FQDN, { dns: [FQDN], organization: 'Example Clinic' });
    await trustNetwork();
    await partition(p, 'hospital');
    writer = await secretClient(p, 'loader', 'system/Patient.cruds');
    await ok(
      p.dataDir,
      'grant',
      'add',
      '--partition',
      'hospital',
      '--client',
      'loader',
      '--scope',
      'system/Patient.cruds',
    );
    await ok(
      p.dataDir,
      'grant',
      'add',
      '--partition',
      'hospital',
      '--community',
      'carequality',
      '--scope',
      'system/Patient.rs',
    );
    const created = await fhir(p, writer, 'POST', '/hospital/Patient', {
      resourceType: 'Patient',
      name: [{ family: 'Lovelace', given: ['Ada'] }],
    });
    patientId = created.json.id as string;
  });
  after(() => p.stop());

  test('a member of a trusted network gets a token with the community scopes and reads the vault granted to its community', async () => {
    const { status, json } = await requestToken(await assertion(member, [ca]));
    assert.equal(status, 200, JSON.stringify(json));
    assert.equal(json.scope, 'system/Patient.rs system/Observation.rs');
    const { payload } = decodeJwt(json.access_token as string);
    assert.equal(payload.client_id, FQDN);
    assert.equal(payload['carevault:community'], 'carequality');
    assert.equal(payload.cnf, undefined, 'no certificate was presented over TLS, so the token is a bearer token');
    const caller = { token: json.access_token as string };
    const read = await fhir(p, caller, 'GET', `/hospital/Patient/${patientId}`);
    assert.equal(read.status, 200);
    assert.equal((read.json.name as { family: string }[])[0]?.family, 'Lovelace');
    // The community grant covers Patient only: the token's Observation scope does not widen it.
    assert.equal((await fhir(p, caller, 'GET', '/hospital/Observation')).status, 403);
    const shown = await ok<Record<string, unknown>>(p.dataDir, 'client', 'show', FQDN);
    assert.equal(shown.community, 'carequality');
    assert.equal(shown.auth, 'private_key_jwt');
  });

  test("another community's certificate for a member's name does not speak for it, until its own community is removed", async () => {
    assert.equal((await requestToken(await assertion(member, [ca]))).status, 200, 'recorded through carequality');
    const laxCa = await networkCa('Lax Network CA');
    await ok(p.dataDir, 'trust', 'add', 'laxnet', '--ca', file('lax.pem', laxCa.certPem), '--scope', 'system/*.rs');
    const settle = () => new Promise((r) => setTimeout(r, 1100)); // the server re-reads communities every second
    await settle();
    const impostor = await issue(laxCa, FQDN, { dns: [FQDN], organization: 'Not the Clinic' });
    const refused = await requestToken(await assertion(impostor, [laxCa]));
    assert.equal(refused.status, 401, JSON.stringify(refused.json));
    assert.match(
      refused.json.error_description ?? '',
      /client "clinic.example.org" is a member of community "carequality": only a chain to that community's CA/,
    );
    assert.equal((await ok<Record<string, unknown>>(p.dataDir, 'client', 'show', FQDN)).community, 'carequality');
    assert.equal((await requestToken(await assertion(member, [ca]))).status, 200, "the member's own key still works");
    // A name no community has recorded yet is anyone's to take, through any trusted community.
    const fresh = await issue(laxCa, 'fresh.example.org', { dns: ['fresh.example.org'] });
    const first = await requestToken(await assertion(fresh, [laxCa], 'fresh.example.org'));
    assert.equal(first.status, 200, JSON.stringify(first.json));
    assert.equal(decodeJwt(first.json.access_token as string).payload['carevault:community'], 'laxnet');

    // The administrator stops trusting carequality: its members' names are free, and so the member can move.
    await ok(p.dataDir, 'trust', 'remove', 'carequality');
    await settle();
    const moved = await requestToken(await assertion(impostor, [laxCa]));
    assert.equal(moved.status, 200, JSON.stringify(moved.json));
    assert.equal((await ok<Record<string, unknown>>(p.dataDir, 'client', 'show', FQDN)).community, 'laxnet');
    // Back as the other tests expect it.
    await trustNetwork();
    await ok(p.dataDir, 'trust', 'remove', 'laxnet');
    await settle();
    assert.equal((await requestToken(await assertion(member, [ca]))).status, 200);
  });

  test('a chain through an intermediate CA is accepted, and a narrower scope may be asked for', async () => {
    const viaIntermediate = await issue(intermediate, 'lab.example.net', { dns: ['lab.example.net'] });
    const { status, json } = await requestToken(await assertion(viaIntermediate, [intermediate], 'lab.example.net'), {
      scope: 'system/Patient.rs',
    });
    assert.equal(status, 200, JSON.stringify(json));
    assert.equal(json.scope, 'system/Patient.rs');
    const wider = await requestToken(await assertion(viaIntermediate, [intermediate, ca], 'lab.example.net'), {
      scope: 'system/Patient.cruds',
    });
    assert.equal(wider.status, 400);
    assert.equal(wider.json.error, 'invalid_scope');
  });

  test('a member with an RSA key signs RS256 and gets a token as well', async () => {
    const rsa = await issue(ca, 'rsa.example.org', { dns: ['rsa.example.org'], rsa: true });
    const { status, json } = await requestToken(await assertion(rsa, [ca], 'rsa.example.org'));
    assert.equal(status, 200, JSON.stringify(json));
    const mismatched = await requestToken(
      await assertion(rsa, [ca], 'rsa.example.org', { signer: { ...member, alg: 'ES256' } as Issued }),
    );
    assert.match(mismatched.json.error_description ?? '', /alg ES256 does not fit the key of the x5c leaf certificate/);
  });

  test('openid-client (third party) gets a token with private_key_jwt when the assertion carries x5c', async () => {
    const other = await issue(ca, 'viewer.example.com', { dns: ['viewer.example.com'] });
    const config = await discover(
      p.issuer,
      'viewer.example.com',
      client.PrivateKeyJwt(other.keys.privateKey, {
        [client.modifyAssertion]: (header) => {
          header.x5c = [other.b64, ca.b64];
        },
      }),
      p.agent(),
    );
    const tokens = await client.clientCredentialsGrant(config, { scope: 'system/Patient.rs' });
    const caller = { token: tokens.access_token };
    assert.equal((await fhir(p, caller, 'GET', `/hospital/Patient/${patientId}`)).status, 200);
  });

  test('a token asked for over mutual TLS with the member certificate is bound to it (cnf)', async () => {
    const { status, json } = await requestToken(await assertion(member, [ca]), { tls: member });
    assert.equal(status, 200, JSON.stringify(json));
    const { payload } = decodeJwt(json.access_token as string);
    assert.ok((payload.cnf as Record<string, string>)['x5t#S256']);
    const path = `/hospital/Patient/${patientId}`;
    assert.equal((await fhir(p, { token: json.access_token as string }, 'GET', path)).status, 401);
    const bound = { token: json.access_token as string, pair: { cert: member.certPem, key: member.keyPem } };
    assert.equal((await fhir(p, bound, 'GET', path)).status, 200);
  });

  test('every bad chain or assertion is refused with the rule it broke, and registers nothing', async () => {
    const stranger = await networkCa('Some Other CA');
    const strangerLeaf = await issue(stranger, 'evil.example.org', { dns: ['evil.example.org'] });
    const expiredIntermediate = await issue(ca, 'Old Issuing CA', {
      ca: true,
      notBefore: new Date(Date.now() - 400 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    const underExpired = await issue(expiredIntermediate, 'old.example.org', { dns: ['old.example.org'] });
    const expiredLeaf = await issue(ca, 'late.example.org', {
      dns: ['late.example.org'],
      notBefore: new Date(Date.now() - 10 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    const noSignature = await issue(ca, 'enc.example.org', {
      dns: ['enc.example.org'],
      usage: 0x20 /* keyEncipherment */,
    });
    const otherSan = await issue(ca, 'wrong.example.org', { dns: ['wrong.example.org'] });
    const caAsLeaf = await issue(ca, 'sub.example.org', { dns: ['sub.example.org'], ca: true });
    const long = [intermediate];
    for (let i = 0; i < 4; i++) long.unshift(await issue(long[0] as Issued, `Level ${i} CA`, { ca: true }));
    const deep = await issue(long[0] as Issued, 'deep.example.org', { dns: ['deep.example.org'] });
    const cases: [string, string, RegExp][] = [
      [
        'untrusted CA',
        await assertion(strangerLeaf, [stranger], 'evil.example.org'),
        /does not lead to the CA of a trusted community/,
      ],
      [
        'expired intermediate',
        await assertion(underExpired, [expiredIntermediate], 'old.example.org'),
        /intermediate certificate .* expired/,
      ],
      ['expired leaf', await assertion(expiredLeaf, [ca], 'late.example.org'), /leaf certificate .* expired/],
      [
        'SAN ≠ client id',
        await assertion(otherSan, [ca], 'not-the-san.example.org'),
        /not a DNS or URI subject alternative name/,
      ],
      ['no digitalSignature', await assertion(noSignature, [ca], 'enc.example.org'), /does not allow digitalSignature/],
      ['CA as leaf', await assertion(caAsLeaf, [ca], 'sub.example.org'), /CA certificate, not an end entity/],
      ['chain longer than 5', await assertion(deep, [...long, ca], 'deep.example.org'), /at most 5/],
      [
        'signed by another key',
        await assertion(member, [ca], FQDN, { signer: otherSan }),
        /not signed by the key of the x5c leaf/,
      ],
      ['iss ≠ sub', await assertion(member, [ca], FQDN, { iss: 'someone.else.org' }), /must both be the client id/],
      ['no iat', await assertion(member, [ca], FQDN, { iat: null }), /no iat/],
      ['no jti', await assertion(member, [ca], FQDN, { jti: null }), /needs a jti/],
      [
        'lifetime over 5 minutes',
        await assertion(member, [ca], FQDN, { exp: Math.floor(Date.now() / 1000) + 3600 }),
        /within 5 minutes/,
      ],
      [
        'wrong audience',
        await assertion(member, [ca], FQDN, { aud: 'https://elsewhere.example/token' }),
        /aud must be/,
      ],
      [
        'x5c not base64 DER',
        await assertion(member, [ca], FQDN, { x5c: ['not base64!'] }),
        /x5c\[0\] is not base64 DER/,
      ],
      [
        'x5c entry not a certificate',
        await assertion(member, [ca], FQDN, { x5c: [Buffer.from('hello').toString('base64')] }),
        /not an X\.509 certificate/,
      ],
      ['chain out of order', await assertion(member, [intermediate], FQDN), /x5c\[0\] is not signed by x5c\[1\]/],
    ];
    const before = await clientIds();
    for (const [name, jwt, message] of cases) {
      const { status, json } = await requestToken(jwt);
      assert.equal(status, 401, `${name}: ${JSON.stringify(json)}`);
      assert.equal(json.error, 'invalid_client', name);
      assert.match(json.error_description ?? '', message, name);
    }
    assert.deepEqual(await clientIds(), before, 'no refused client was registered');
  });

  test('caller-chosen text in a refusal (and so in the audit trail) is cut short', async () => {
    const { status, json } = await requestToken(await assertion(member, [ca], FQDN, { iss: 'x'.repeat(20_000) }));
    assert.equal(status, 401);
    assert.match(json.error_description ?? '', /must both be the client id/);
    assert.ok((json.error_description ?? '').length < 400, `${(json.error_description ?? '').length} characters`);
  });

  test("the seed's static jti is refused on its second use, saying so", async () => {
    const first = await requestToken(await assertion(member, [ca], FQDN, { jti: 'static-jti' }));
    assert.equal(first.status, 200);
    const again = await requestToken(await assertion(member, [ca], FQDN, { jti: 'static-jti' }));
    assert.equal(again.status, 401);
    assert.match(again.json.error_description ?? '', /jti was already used/);
  });

  test('a member must present its chain every time: an assertion without x5c is refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    // Same key, no chain: the key alone is not what the community vouches for.
    const noChain = await new SignJWT({
      iss: FQDN,
      sub: FQDN,
      aud: p.tokenUrl,
      iat: now,
      exp: now + 60,
      jti: randomUUID(),
    })
      .setProtectedHeader({ alg: 'ES256' })
      .sign(createPrivateKey(member.keyPem));
    const { status, json } = await requestToken(noChain);
    assert.equal(status, 401);
    assert.match(json.error_description ?? '', /must send its certificate chain \(x5c\)/);
  });

  test('a certificate on the community CRL is refused; removing the community ends its members\u2019 access', async () => {
    const revoked = await issue(ca, 'gone.example.org', { dns: ['gone.example.org'] });
    // The network's CRL distribution point (DER over HTTP, as CAs publish it), on loopback.
    const der = Buffer.from((await crl(ca, [revoked])).replace(/-----[^-]+-----|\s/g, ''), 'base64');
    const crlServer = createServer((_req, res) =>
      res.writeHead(200, { 'content-type': 'application/pkix-crl' }).end(der),
    );
    await new Promise<void>((r) => crlServer.listen(0, '127.0.0.1', r));
    const distributionPoint = `http://127.0.0.1:${(crlServer.address() as { port: number }).port}/network.crl`;
    assert.equal((await requestToken(await assertion(revoked, [ca], 'gone.example.org'))).status, 200);
    await trustNetwork('--crl', distributionPoint);
    crlServer.close();
    await new Promise((r) => setTimeout(r, 1100)); // the server re-reads communities every second
    const refused = await requestToken(await assertion(revoked, [ca], 'gone.example.org'));
    assert.equal(refused.status, 401);
    assert.match(refused.json.error_description ?? '', /was revoked by community "carequality"/);
    assert.equal((await requestToken(await assertion(member, [ca]))).status, 200, 'others are unaffected');

    const listed = await ok<Record<string, unknown>[]>(p.dataDir, 'trust', 'list');
    assert.equal((listed[0]?.crl as { revoked: number } | undefined)?.revoked, 1);
    const foreignCrl = await crl(await networkCa('Forger'), []);
    const bad = await cli(
      p.dataDir,
      'trust',
      'add',
      'carequality',
      '--ca',
      file('ca.pem', ca.certPem),
      '--crl',
      file('forged.crl', foreignCrl),
    );
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /not signed by this community CA/);

    await ok(p.dataDir, 'trust', 'remove', 'carequality');
    await new Promise((r) => setTimeout(r, 1100));
    const gone = await requestToken(await assertion(member, [ca]));
    assert.equal(gone.status, 401);
    assert.match(gone.json.error_description ?? '', /does not lead to the CA of a trusted community/);
    await trustNetwork();
  });

  test('the server fetches the community CRL again: a certificate revoked later is refused without trust add; a stale or forged CRL is not taken', async () => {
    const later = await issue(ca, 'later.example.org', { dns: ['later.example.org'] });
    const der = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    const hourAgo = new Date(Date.now() - 3600_000);
    let published = der(await crl(ca, [], { thisUpdate: hourAgo }));
    const crlServer = createServer((_req, res) =>
      res.writeHead(200, { 'content-type': 'application/pkix-crl' }).end(published),
    );
    await new Promise<void>((r) => crlServer.listen(0, '127.0.0.1', r));
    const distributionPoint = `http://127.0.0.1:${(crlServer.address() as { port: number }).port}/network.crl`;
    const token = async () => requestToken(await assertion(later, [ca], 'later.example.org'));
    try {
      await trustNetwork('--crl', distributionPoint);
      const listed = await ok<Record<string, unknown>[]>(p.dataDir, 'trust', 'list');
      assert.equal((listed[0]?.crl as { url?: string } | undefined)?.url, distributionPoint);
      assert.equal((await token()).status, 200);

      // The network revokes it and publishes a newer CRL at the same place; nobody runs trust add.
      published = der(await crl(ca, [later], { thisUpdate: new Date(Date.now() - 60_000) }));
      let refused = await token();
      for (let i = 0; i < 40 && refused.status === 200; i++) {
        await new Promise((r) => setTimeout(r, 250));
        refused = await token();
      }
      assert.equal(refused.status, 401);
      assert.match(refused.json.error_description ?? '', /was revoked by community "carequality"/);

      // An older CRL (one without the revocation, replayed) and one the CA did not sign are not taken.
      published = der(await crl(ca, [], { thisUpdate: hourAgo }));
      await new Promise((r) => setTimeout(r, 2500));
      assert.equal((await token()).status, 401, 'a stale CRL does not bring a revoked certificate back');
      published = der(await crl(await networkCa('Forger'), [], { thisUpdate: new Date() }));
      await new Promise((r) => setTimeout(r, 2500));
      assert.equal((await token()).status, 401, 'a forged CRL is not taken');
      assert.equal((await requestToken(await assertion(member, [ca]))).status, 200, 'others are unaffected');
    } finally {
      crlServer.close();
      await trustNetwork();
    }
  });

  test('trust add refuses what is not a CA, and grant add names a network client before its first token', async () => {
    const notCa = await cli(p.dataDir, 'trust', 'add', 'x', '--ca', file('leaf.pem', member.certPem));
    assert.equal(notCa.code, 1);
    assert.match(notCa.stderr, /not a CA certificate/);
    const unknown = await cli(
      p.dataDir,
      'grant',
      'add',
      '--partition',
      'hospital',
      '--community',
      'nope',
      '--scope',
      'system/Patient.rs',
    );
    assert.match(unknown.stderr, /trust community "nope" not found/);
    const early = await ok(
      p.dataDir,
      'grant',
      'add',
      '--partition',
      'hospital',
      '--client',
      'new.example.org',
      '--scope',
      'system/Patient.rs',
    );
    assert.deepEqual(early, { partition: 'hospital', client: 'new.example.org', scope: 'system/Patient.rs' });
  });

  describe('UDAP-style dynamic registration (POST /oauth/register)', () => {
    const register = async (body: unknown, contentType = 'application/json') => {
      const res = await p.fetch(`${p.issuer}/oauth/register`, {
        method: 'POST',
        dispatcher: p.agent(),
        headers: { 'content-type': contentType },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      });
      return { status: res.status, json: (await res.json()) as Record<string, string> };
    };
    const statement = (leaf: Issued, clientId: string, claims: Record<string, unknown> = {}, o = {}) =>
      networkJwt(leaf, [ca], clientId, {
        aud: `${p.issuer}/oauth/register`,
        claims: {
          client_name: 'Registry Test App',
          grant_types: ['client_credentials'],
          token_endpoint_auth_method: 'private_key_jwt',
          ...claims,
        },
        ...o,
      });

    test('a member registers itself for a subset of the community scopes, updates itself, then gets tokens for exactly those', async () => {
      const app = await issue(ca, 'app.example.org', { dns: ['app.example.org'] });
      const discovery = await p.fetch(`${p.fhirBase}/hospital/.well-known/smart-configuration`, {
        dispatcher: p.agent(),
      });
      assert.equal(
        ((await discovery.json()) as Record<string, string>).registration_endpoint,
        `${p.issuer}/oauth/register`,
      );

      const first = await register({
        software_statement: await statement(app, 'app.example.org', { scope: 'system/Patient.rs' }),
        udap: '1',
      });
      assert.equal(first.status, 201, JSON.stringify(first.json));
      assert.equal(first.json.client_id, 'app.example.org');
      assert.equal(first.json.scope, 'system/Patient.rs');
      assert.equal(first.json.client_name, 'Registry Test App');
      // The seed's may_2020 client sends `"udap": 1` (a number) and an empty certifications list.
      const again = await register({
        certifications: [],
        software_statement: await statement(app, 'app.example.org', {
          scope: 'system/Patient.rs',
          client_name: 'Renamed',
        }),
        udap: 1,
      });
      assert.equal(again.status, 200);
      assert.equal((await ok<Record<string, unknown>>(p.dataDir, 'client', 'show', 'app.example.org')).name, 'Renamed');

      const token = await requestToken(await assertion(app, [ca], 'app.example.org'));
      assert.equal(token.status, 200, JSON.stringify(token.json));
      assert.equal(token.json.scope, 'system/Patient.rs', 'the registered subset, not the whole community scope');
      const events = await p.store.audit.search({ type: ['110137'], limit: 50, offset: 0 });
      assert.ok(events.events.some((e) => e.includes('UDAP dynamic client registration')));
    });

    test('registration refuses what RFC 7591 and the community rules refuse, and stores nothing', async () => {
      const stranger = await networkCa('Unknown CA');
      // A second trusted community whose CA certifies the first one's member by name.
      const otherCa = await networkCa('Other Network CA');
      await ok(
        p.dataDir,
        'trust',
        'add',
        'othernet',
        '--ca',
        file('other.pem', otherCa.certPem),
        '--scope',
        'system/*.rs',
      );
      await requestToken(await assertion(member, [ca]));
      const outsider = await issue(stranger, 'out.example.org', { dns: ['out.example.org'] });
      const app = await issue(ca, 'reg.example.org', { dns: ['reg.example.org'] });
      const cases: [string, unknown, string, RegExp, string?][] = [
        [
          'not JSON',
          'software_statement=x',
          'invalid_client_metadata',
          /JSON object/,
          'application/x-www-form-urlencoded',
        ],
        [
          'no udap flag',
          { software_statement: await statement(app, 'reg.example.org') },
          'invalid_client_metadata',
          /udap must be "1"/,
        ],
        ['no statement', { udap: '1' }, 'invalid_software_statement', /software_statement .* is required/],
        [
          'untrusted issuer',
          {
            udap: '1',
            software_statement: await statement(outsider, 'out.example.org', {}, { x5c: [outsider.b64, stranger.b64] }),
          },
          'unapproved_software_statement',
          /trusted community/,
        ],
        [
          'wrong audience',
          { udap: '1', software_statement: await statement(app, 'reg.example.org', {}, { aud: p.tokenUrl }) },
          'invalid_software_statement',
          /aud must be/,
        ],
        [
          'SAN mismatch',
          { udap: '1', software_statement: await statement(app, 'other.example.org') },
          'invalid_software_statement',
          /subject alternative name/,
        ],
        [
          'authorization_code',
          {
            udap: '1',
            software_statement: await statement(app, 'reg.example.org', { grant_types: ['authorization_code'] }),
          },
          'invalid_client_metadata',
          /client_credentials/,
        ],
        [
          'secret auth',
          {
            udap: '1',
            software_statement: await statement(app, 'reg.example.org', {
              token_endpoint_auth_method: 'client_secret_basic',
            }),
          },
          'invalid_client_metadata',
          /private_key_jwt/,
        ],
        [
          'scope beyond the community',
          { udap: '1', software_statement: await statement(app, 'reg.example.org', { scope: 'system/Patient.cruds' }) },
          'invalid_client_metadata',
          /beyond what community "carequality" allows/,
        ],
        [
          "another community's member",
          {
            udap: '1',
            software_statement: await networkJwt(await issue(otherCa, FQDN, { dns: [FQDN] }), [otherCa], FQDN, {
              aud: `${p.issuer}/oauth/register`,
            }),
          },
          'unapproved_software_statement',
          /is a member of community "carequality"/,
        ],
        [
          'a registered client id',
          { udap: '1', software_statement: await statement(await issue(ca, 'loader', { dns: ['loader'] }), 'loader') },
          'invalid_client_metadata',
          /registered individually/,
        ],
      ];
      const before = await clientIds();
      await new Promise((r) => setTimeout(r, 1100)); // the server re-reads communities every second
      for (const [name, body, error, message, type] of cases) {
        const { status, json } = await register(body, type);
        assert.equal(status, 400, `${name}: ${JSON.stringify(json)}`);
        assert.equal(json.error, error, `${name}: ${json.error_description}`);
        assert.match(json.error_description ?? '', message, name);
      }
      assert.deepEqual(await clientIds(), before);
    });
  });
});
