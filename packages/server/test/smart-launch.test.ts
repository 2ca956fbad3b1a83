import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createLocalJWKSet, exportJWK, generateKeyPair, type JWK, jwtVerify } from 'jose';
import * as client from 'openid-client';
import { Agent } from 'undici';
import { userRevoke, userUndelegate } from '../src/admin/people.ts';
import { auditEvents, type Caller, fhir, grant, secretClient } from './helpers/fhir.ts';
import { formOf, LoginDriver, type PageStop, type Person } from './helpers/login-driver.ts';
import { authorizationRequest, discover } from './helpers/oidc-client.ts';
import { addDelegation, addPerson, familyVault, launchFor } from './helpers/people.ts';
import { decodeJwt, startPlatform, type TestPlatform } from './helpers/platform.ts';
import { rawSql } from './helpers/raw-db.ts';

// SMART App Launch for people (issue 4): authorization code + PKCE with login and consent pages, refresh,
// launch context, delegates, and the FHIR-side enforcement of patient/ and user/ scopes.
//
// Inferno-derived checks (standards.md §N) for the standalone and EHR launches, and where they are tested
// (test names carry the B/C/I/A row IDs; smart-browser.test.ts runs both launches with fhirclient.js):
//   N01–N03 well-known document, fields, capabilities ........ 'A11 A12 A13 A14'
//   N04 CORS on discovery, metadata, token, FHIR .............. 'A16 A17'; fhirclient in Chromium (real CORS)
//   N05 TLS ≥ 1.2 ............................................. auth-edges tests (a TLS 1.1 handshake is refused)
//   N06 N08 redirect with state, code received ................ 'B01 …', every launch below
//   N07 launch parameter (EHR) ................................ 'EHR launch …', smart-browser EHR test
//   N09 token exchange: public, symmetric (Basic), asymmetric . 'B01 …', 'EHR launch …' (viewer), 'N09 …'
//   N10 N11 token body and headers (code and refresh) ......... 'B01 …', 'C09 B15 …', 'N11 …'
//   N12 id_token RS256, kid in JWKS, iss/aud, fhirUser ........ 'B01 …', 'N09 … N12'
//   N13 N20 refresh with and without scope; context kept ...... 'C22 C23 C24 C27 …'
//   N14 introspection ......................................... 'introspection reports the person context …'
//   N18 N29 N30 scopes, patient context, id_token ............. 'B01 …', 'EHR launch …'
//   N19 no token → 401 ......................................... fhir-rest tests (I02)
//   N21 need_patient_banner, smart_style_url .................. 'the EHR creates a context …'
//   N22 N33 user unticks scopes → not granted, refused ........ 'N22 I13 …', smart-browser standalone test
//   N24 four bad PKCE verifiers ............................... 'C03–C06 …'
//   N25 bad code / bad client ................................. 'C07 C08 C10 …'
//   N26 bad refresh token ..................................... 'C25 C26 …'
//   N27 bad aud ................................................ 'B09 N27 …'
//   N31 v1 scopes ............................................. 'N31 I09 I10 …'
//   N32 granular category scopes .............................. 'I11 I12 …'

const REDIRECT = 'https://app.example/callback';
const PASSWORD = 'correct horse battery';

let p: TestPlatform;
let vault: string;
let fhirBase: string;
let app: client.Configuration;
let auditor: Caller;

before(async () => {
  p = await startPlatform();
  ({ partition: vault } = await familyVault(p, 'urn:cara:account:jansen', 'loader'));
  fhirBase = `${p.fhirBase}/${vault}`;
  await addPerson(p, 'anna', PASSWORD, { account: 'urn:cara:account:jansen', fhirUser: 'Patient/mother' });
  await p.register('patient-app', {
    auth: 'none',
    redirectUri: [REDIRECT],
    scope: 'patient/*.cruds user/*.rs',
    name: 'Health Diary',
  });
  app = await discover(p.base, 'patient-app', client.None(), p.agent());
  auditor = await secretClient(p, 'auditor', 'system/*.rs');
  await grant(p, { partition: vault, client: 'auditor', scope: 'system/*.rs' });
});
after(() => p.stop());

const driver = () => new LoginDriver(new URL(p.base).origin, p.agent());

interface Launch {
  url: URL;
  verifier: string;
  state: string;
}

function authorizeUrl(params: Record<string, string> = {}): Promise<Launch> {
  return authorizationRequest(app, {
    redirect_uri: REDIRECT,
    scope: 'openid fhirUser launch/patient offline_access patient/*.rs',
    aud: fhirBase,
    ...params,
  });
}

async function codeFor(launch: Launch, person: Partial<Person> = {}): Promise<URL> {
  const stop = await driver().authorize(launch.url.href, { ...{ username: 'anna', password: PASSWORD }, ...person });
  if (!(stop instanceof URL)) throw new Error(`stopped at ${stop.url} (${stop.status}): ${stop.html.slice(0, 300)}`);
  return stop;
}

async function tokens(person: Partial<Person> = {}, params: Record<string, string> = {}) {
  const launch = await authorizeUrl(params);
  const callback = await codeFor(launch, person);
  return client.authorizationCodeGrant(app, callback, {
    pkceCodeVerifier: launch.verifier,
    expectedState: launch.state,
  });
}

const as = (t: { access_token: string }): Caller => ({ token: t.access_token });

/** A backend client that may do everything in the test vault, and a PUT through it that must succeed. */
async function fullAccess(client: string) {
  const loader = await secretClient(p, client, 'system/*.cruds');
  await grant(p, { partition: vault, client, scope: 'system/*.cruds' });
  const put = async (type: string, id: string, body: Record<string, unknown>) => {
    const r = await fhir(p, loader, 'PUT', `/${vault}/${type}/${id}`, { resourceType: type, id, ...body });
    assert.ok(r.status === 200 || r.status === 201, r.text);
  };
  return { loader, put };
}

describe('standalone patient launch with openid-client (code + PKCE + refresh)', () => {
  test('B01 C01 C02 C15 C19 C21: code with state, then a token response with patient, id_token and refresh token', async () => {
    const launch = await authorizeUrl();
    const callback = await codeFor(launch);
    assert.equal(callback.origin + callback.pathname, REDIRECT);
    assert.equal(callback.searchParams.get('state'), launch.state);
    assert.ok(callback.searchParams.get('code'));
    const t = await client.authorizationCodeGrant(app, callback, {
      pkceCodeVerifier: launch.verifier,
      expectedState: launch.state,
    });
    assert.equal(t.token_type.toLowerCase(), 'bearer');
    assert.equal(typeof t.expires_in, 'number');
    assert.equal(t.patient, 'mother');
    assert.equal(typeof t.refresh_token, 'string');
    const scopes = (t.scope ?? '').split(' ');
    for (const s of ['openid', 'fhirUser', 'launch/patient', 'offline_access', 'patient/*.rs'])
      assert.ok(scopes.includes(s), s);
    const idToken = decodeJwt(t.id_token as string);
    assert.equal(idToken.header.alg, 'RS256');
    assert.equal(idToken.payload.fhirUser, `${fhirBase}/Patient/mother`);
    assert.equal(idToken.payload.aud, 'patient-app');
    const claims = t.claims();
    assert.equal(claims?.sub, 'anna');
    // C20: fhirUser resolves with the access token.
    const me = await p.fetch(idToken.payload.fhirUser as string, {
      dispatcher: p.agent(),
      headers: { authorization: `Bearer ${t.access_token}` },
    });
    assert.equal(me.status, 200);
    assert.equal(((await me.json()) as { resourceType: string }).resourceType, 'Patient');
  });

  test('C22 C23 C24 C27: refresh keeps the context and scope, rotates, and the old refresh token stops working', async () => {
    const t = await tokens();
    const refreshed = await client.refreshTokenGrant(app, t.refresh_token as string);
    assert.equal(refreshed.patient, 'mother');
    assert.equal(typeof refreshed.expires_in, 'number');
    assert.deepEqual(new Set(refreshed.scope?.split(' ')), new Set(t.scope?.split(' ')));
    assert.notEqual(refreshed.refresh_token, t.refresh_token);
    const read = await fhir(p, as(refreshed), 'GET', `/${vault}/Patient/mother`);
    assert.equal(read.status, 200);
    // A strict subset is granted as asked (C23); more than the grant is invalid_scope (C24).
    const narrower = await client.refreshTokenGrant(app, refreshed.refresh_token as string, {
      scope: 'openid launch/patient offline_access patient/*.rs',
    });
    assert.ok(!narrower.scope?.split(' ').includes('fhirUser'));
    await assert.rejects(
      client.refreshTokenGrant(app, narrower.refresh_token as string, { scope: 'patient/*.cruds' }),
      (err: client.ResponseBodyError) => err.error === 'invalid_scope',
    );
    // C27: the rotated-out token is refused, and reusing it revokes the grant.
    await assert.rejects(
      client.refreshTokenGrant(app, t.refresh_token as string),
      (err: client.ResponseBodyError) => err.error === 'invalid_grant',
    );
    const afterRevoke = await fhir(p, as(narrower), 'GET', `/${vault}/Patient/mother`);
    assert.equal(afterRevoke.status, 401);
  });
});

/** Starts an authorization and returns where the browser ends up before any login. */
async function firstStop(params: Record<string, string>, drop: string[] = []): Promise<URL | PageStop> {
  const launch = await authorizeUrl(params);
  for (const d of drop) launch.url.searchParams.delete(d);
  return driver().follow(launch.url.href);
}

function redirectError(stop: URL | PageStop): { error: string | null; state: string | null; code: string | null } {
  assert.ok(stop instanceof URL, `expected a redirect to the app, got ${stop instanceof URL ? '' : stop.status}`);
  assert.equal(stop.origin + stop.pathname, REDIRECT);
  // response_type=token answers in the fragment (its default response mode), code flows in the query.
  const q = stop.hash ? new URLSearchParams(stop.hash.slice(1)) : stop.searchParams;
  return { error: q.get('error'), state: q.get('state'), code: q.get('code') };
}

describe('after the launch', () => {
  test('introspection reports the person context of the token (G rows)', async () => {
    const t = await tokens();
    const out = await p.register('introspector', {
      auth: 'client_secret_basic',
      scope: 'system/*.rs',
      resourceServer: true,
    });
    const res = await p.fetch(`${p.base}/oauth/introspect`, {
      method: 'POST',
      dispatcher: p.agent(),
      headers: {
        authorization: `Basic ${Buffer.from(`introspector:${out.client_secret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: `token=${t.access_token}`,
    });
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.active, true);
    assert.equal(body.patient, 'mother');
    assert.equal(body.sub, 'anna');
    assert.equal(body.fhirUser, `${fhirBase}/Patient/mother`);
  });

  test('withdrawing consent (carevault user revoke) ends refresh and access tokens at once', async () => {
    const t = await tokens();
    assert.equal((await fhir(p, as(t), 'GET', `/${vault}/Patient/mother`)).status, 200);

    const result = await userRevoke(p.config, 'anna', { client: 'patient-app' });
    assert.ok(result.revoked.length >= 1);
    // Giving and withdrawing consent are audited (NEN 7513 toestemmingsprofiel = the grant).
    const subtypes = [
      'https://carevault.dev/fhir/CodeSystem/audit-subtype|consent-given',
      'https://carevault.dev/fhir/CodeSystem/audit-subtype|consent-withdrawn',
    ];
    const { events } = await p.store.audit.search({ agent: ['anna'], subtype: subtypes, limit: 1000, offset: 0 });
    const codes = new Set(events.map((e) => (JSON.parse(e) as { subtype: { code: string }[] }).subtype[0]?.code));
    assert.deepEqual([...codes].sort(), ['consent-given', 'consent-withdrawn']);
    assert.equal((await fhir(p, as(t), 'GET', `/${vault}/Patient/mother`)).status, 401);
    await assert.rejects(
      client.refreshTokenGrant(app, t.refresh_token as string),
      (err: client.ResponseBodyError) => err.error === 'invalid_grant',
    );
  });
});

describe('asymmetric confidential app and OIDC checks (N09, N11, N12, N31)', () => {
  test('N09: a private_key_jwt app (ES384 assertion) exchanges its code; N12: the id_token verifies against the JWKS', async () => {
    const pair = await generateKeyPair('ES384', { extractable: true });
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'app-k1', alg: 'ES384', use: 'sig' };
    const file = join(p.dataDir, 'asymmetric-app-jwks.json');
    writeFileSync(file, JSON.stringify({ keys: [jwk] }));
    await p.register('asymmetric-app', {
      auth: 'private_key_jwt',
      jwks: file,
      redirectUri: [REDIRECT],
      scope: 'patient/*.rs',
    });
    const conf = await discover(
      p.base,
      'asymmetric-app',
      client.PrivateKeyJwt({ key: pair.privateKey, kid: 'app-k1' }),
      p.agent(),
    );
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const url = client.buildAuthorizationUrl(conf, {
      redirect_uri: REDIRECT,
      scope: 'openid fhirUser launch/patient patient/Observation.rs',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      aud: fhirBase,
    });
    const callback = await codeFor({ url, verifier, state });
    const t = await client.authorizationCodeGrant(conf, callback, { pkceCodeVerifier: verifier, expectedState: state });
    assert.equal(t.patient, 'mother');
    const discovery = (await (
      await p.fetch(`${p.base}/.well-known/openid-configuration`, { dispatcher: p.agent() })
    ).json()) as {
      jwks_uri: string;
      id_token_signing_alg_values_supported: string[];
    };
    assert.ok(discovery.id_token_signing_alg_values_supported.includes('RS256'), 'A18');
    const jwks = (await (await p.fetch(discovery.jwks_uri, { dispatcher: p.agent() })).json()) as { keys: JWK[] };
    assert.ok(
      jwks.keys.some((k) => k.kty === 'RSA' && k.n && k.e && k.kid),
      'A19',
    );
    const { payload, protectedHeader } = await jwtVerify(t.id_token as string, createLocalJWKSet(jwks), {
      issuer: p.issuer,
      audience: 'asymmetric-app',
    });
    assert.equal(protectedHeader.alg, 'RS256');
    assert.ok(typeof payload.sub === 'string' && payload.sub.length < 256);
    assert.equal(payload.fhirUser, `${fhirBase}/Patient/mother`);
  });

  test('N11: the refresh response has no-store / no-cache too', async () => {
    const t = await tokens();
    const r = await tokenRequest({
      grant_type: 'refresh_token',
      refresh_token: t.refresh_token as string,
      client_id: 'patient-app',
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('cache-control'), 'no-store');
    assert.equal(r.headers.get('pragma'), 'no-cache');
    assert.equal(r.json.patient, 'mother');
  });

  test('N31 I09 I10: v1 scopes are granted as v1: .read reads and searches, .write does not read', async () => {
    const t = await tokens({}, { scope: 'launch/patient patient/Observation.read patient/Condition.write' });
    assert.deepEqual((t.scope ?? '').split(' ').sort(), [
      'launch/patient',
      'patient/Condition.write',
      'patient/Observation.read',
    ]);
    const c = as(t);
    assert.equal((await fhir(p, c, 'GET', `/${vault}/Observation/obs-m-lab`)).status, 200);
    assert.equal((await fhir(p, c, 'GET', `/${vault}/Observation?patient=mother`)).status, 200);
    assert.equal((await fhir(p, c, 'GET', `/${vault}/Condition/cond-1`)).status, 403);
    const obs = {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      subject: { reference: 'Patient/mother' },
    };
    assert.equal((await fhir(p, c, 'POST', `/${vault}/Observation`, obs)).status, 403);
  });
});

describe('authorization endpoint: bad requests (B rows)', () => {
  test('B03 B04: unknown client or unregistered redirect_uri → an error page, never a redirect', async () => {
    const cases: Record<string, string>[] = [
      { redirect_uri: `${REDIRECT}/x` },
      { redirect_uri: `${REDIRECT}?a=b` },
      { client_id: 'nobody' },
    ];
    for (const params of cases) {
      const stop = await firstStop(params);
      assert.ok(!(stop instanceof URL), JSON.stringify(params));
      assert.equal(stop.status, 400);
      assert.match(stop.html, /Something went wrong/);
    }
  });

  test('B05 B06 B07 B08: bad response_type, missing or plain PKCE, missing state → error redirect', async () => {
    assert.equal(redirectError(await firstStop({ response_type: 'token' })).error, 'unsupported_response_type');
    const noChallenge = redirectError(await firstStop({}, ['code_challenge', 'code_challenge_method']));
    assert.equal(noChallenge.error, 'invalid_request');
    assert.ok(noChallenge.state);
    assert.equal(redirectError(await firstStop({ code_challenge_method: 'plain' })).error, 'invalid_request');
    const noState = redirectError(await firstStop({}, ['state']));
    assert.equal(noState.error, 'invalid_request');
    assert.equal(noState.code, null);
  });

  test('B09 N27: an aud that is not this FHIR server → no code', async () => {
    for (const aud of ['https://evil.example/fhir', `${p.fhirBase}/no_such_vault`]) {
      const r = redirectError(await firstStop({ aud }));
      assert.equal(r.code, null);
      assert.ok(r.error);
    }
    const missing = redirectError(await firstStop({}, ['aud']));
    assert.equal(missing.error, 'invalid_request');
  });

  test('B10: resource in place of aud is accepted and becomes the token audience', async () => {
    const launch = await authorizeUrl({ resource: fhirBase });
    launch.url.searchParams.delete('aud');
    const callback = await codeFor(launch);
    const t = await client.authorizationCodeGrant(app, callback, {
      pkceCodeVerifier: launch.verifier,
      expectedState: launch.state,
    });
    assert.equal(decodeJwt(t.access_token).payload.aud, fhirBase);
  });

  test('B02: authorize-post takes the same parameters as a form', async () => {
    const launch = await authorizeUrl();
    const d = driver();
    const stop = await d.follow(`${p.base}/oauth/authorize`, {
      method: 'POST',
      body: launch.url.searchParams.toString(),
    });
    assert.ok(!(stop instanceof URL));
    assert.match(stop.html, /Sign in/);
  });

  test('B11: the user denies → access_denied with the state', async () => {
    const launch = await authorizeUrl();
    const stop = await driver().authorize(launch.url.href, { username: 'anna', password: PASSWORD, decision: 'deny' });
    const r = redirectError(stop);
    assert.equal(r.error, 'access_denied');
    assert.equal(r.state, launch.state);
  });

  test('B16 B17: unknown and malformed scopes are dropped, never granted', async () => {
    const t = await tokens(
      {},
      { scope: 'openid launch/patient patient/Observation.rs patient/Observation.dus foo/Bar.x system/*.cruds' },
    );
    assert.deepEqual((t.scope ?? '').split(' ').sort(), ['launch/patient', 'openid', 'patient/Observation.rs']);
  });
});

async function tokenRequest(body: Record<string, string>) {
  const res = await p.fetch(p.tokenUrl, {
    method: 'POST',
    dispatcher: p.agent(),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(body).toString(),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown>, headers: res.headers };
}

describe('token endpoint: bad requests (C rows, Inferno N24–N26)', () => {
  const exchange = async (verifier: string | undefined, callback: URL, extra: Record<string, string> = {}) =>
    tokenRequest({
      grant_type: 'authorization_code',
      code: callback.searchParams.get('code') as string,
      redirect_uri: REDIRECT,
      client_id: 'patient-app',
      ...(verifier === undefined ? {} : { code_verifier: verifier }),
      ...extra,
    });

  test('C03–C06: absent, blank, wrong, or challenge-as-verifier PKCE → 400', async () => {
    for (const bad of ['absent', 'blank', 'wrong', 'challenge']) {
      const launch = await authorizeUrl();
      const callback = await codeFor(launch);
      const challenge = launch.url.searchParams.get('code_challenge') as string;
      const verifier = { absent: undefined, blank: '', wrong: client.randomPKCECodeVerifier(), challenge }[bad];
      const r = await exchange(verifier, callback);
      assert.equal(r.status, 400, bad);
      assert.ok(['invalid_grant', 'invalid_request'].includes(r.json.error as string), bad);
    }
  });

  test('C07 C08 C10: bad code, bad client, other redirect_uri', async () => {
    const bad = await tokenRequest({
      grant_type: 'authorization_code',
      code: 'BAD_CODE',
      redirect_uri: REDIRECT,
      client_id: 'patient-app',
      code_verifier: client.randomPKCECodeVerifier(),
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error, 'invalid_grant');
    const launch = await authorizeUrl();
    const callback = await codeFor(launch);
    const badClient = await exchange(launch.verifier, callback, { client_id: 'BAD_CLIENT_ID' });
    assert.ok([400, 401].includes(badClient.status));
    assert.equal(badClient.json.error, 'invalid_client');
    const otherRedirect = await exchange(launch.verifier, callback, { redirect_uri: `${REDIRECT}/other` });
    assert.equal(otherRedirect.json.error, 'invalid_grant');
  });

  test('C09 B15: a code works once; reusing it revokes what it issued', async () => {
    const launch = await authorizeUrl();
    const callback = await codeFor(launch);
    const first = await exchange(launch.verifier, callback);
    assert.equal(first.status, 200);
    assert.equal(first.headers.get('cache-control'), 'no-store');
    assert.equal(first.headers.get('pragma'), 'no-cache');
    assert.equal(
      (await fhir(p, { token: first.json.access_token as string }, 'GET', `/${vault}/Patient/mother`)).status,
      200,
    );
    const again = await exchange(launch.verifier, callback);
    assert.equal(again.status, 400);
    assert.equal(again.json.error, 'invalid_grant');
    assert.equal(
      (await fhir(p, { token: first.json.access_token as string }, 'GET', `/${vault}/Patient/mother`)).status,
      401,
    );
    const refresh = await tokenRequest({
      grant_type: 'refresh_token',
      refresh_token: first.json.refresh_token as string,
      client_id: 'patient-app',
    });
    assert.equal(refresh.json.error, 'invalid_grant');
  });

  test('B15: an expired code → invalid_grant', async () => {
    const launch = await authorizeUrl();
    const callback = await codeFor(launch);
    // Age every code past its 60 s lifetime instead of waiting for it.
    await rawSql(p.dataDir, "UPDATE oidc_payloads SET expires_at = 1 WHERE model = 'AuthorizationCode'");
    const r = await exchange(launch.verifier, callback);
    assert.equal(r.status, 400);
    assert.equal(r.json.error, 'invalid_grant');
  });

  test('C25 C26: an invalid refresh token, or another client’s → invalid_grant', async () => {
    const bad = await tokenRequest({ grant_type: 'refresh_token', refresh_token: 'INVALID', client_id: 'patient-app' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error, 'invalid_grant');
    await p.register('other-app', { auth: 'none', redirectUri: ['https://other.example/cb'], scope: 'patient/*.rs' });
    const t = await tokens();
    const stolen = await tokenRequest({
      grant_type: 'refresh_token',
      refresh_token: t.refresh_token as string,
      client_id: 'other-app',
    });
    assert.equal(stolen.status, 400);
    assert.equal(stolen.json.error, 'invalid_grant');
  });
});

const ids = (bundle: Record<string, unknown>) =>
  ((bundle.entry as { resource: { resourceType: string; id: string } }[] | undefined) ?? [])
    .map((e) => `${e.resource.resourceType}/${e.resource.id}`)
    .sort();
const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';

describe('what a patient token reaches (I09–I14, N22)', () => {
  let t: Caller;
  before(async () => {
    const granted = await tokens(
      { untick: ['patient/Condition.rs'] },
      { scope: 'openid fhirUser launch/patient patient/Patient.rs patient/Observation.rs patient/Condition.rs' },
    );
    assert.ok(!granted.scope?.split(' ').includes('patient/Condition.rs'), 'the unticked scope is not granted');
    t = as(granted);
  });

  test('N22 I13: an unticked resource type is refused', async () => {
    assert.equal((await fhir(p, t, 'GET', `/${vault}/Condition?patient=mother`)).status, 403);
    assert.equal((await fhir(p, t, 'GET', `/${vault}/Condition/cond-1`)).status, 403);
  });

  test('I14: only the launch patient’s compartment, in searches, reads and includes', async () => {
    const all = await fhir(p, t, 'GET', `/${vault}/Observation`);
    assert.deepEqual(ids(all.json), ['Observation/obs-m-lab', 'Observation/obs-m-vital']);
    const other = await fhir(p, t, 'GET', `/${vault}/Observation?patient=child&_total=accurate`);
    assert.equal(other.status, 200);
    assert.deepEqual(ids(other.json), []);
    assert.equal(other.json.total, 0);
    assert.equal((await fhir(p, t, 'GET', `/${vault}/Observation/obs-c-lab`)).status, 403);
    assert.equal((await fhir(p, t, 'GET', `/${vault}/Patient/child`)).status, 403);
    assert.equal((await fhir(p, t, 'GET', `/${vault}/Patient/child/_history`)).status, 403);
    const patients = await fhir(p, t, 'GET', `/${vault}/Patient`);
    assert.deepEqual(ids(patients.json), ['Patient/mother']);
    const included = await fhir(p, t, 'GET', `/${vault}/Observation?_include=Observation:patient`);
    assert.deepEqual(ids(included.json), ['Observation/obs-m-lab', 'Observation/obs-m-vital', 'Patient/mother']);
    const rev = await fhir(p, t, 'GET', `/${vault}/Patient?_revinclude=Observation:patient`);
    assert.ok(!ids(rev.json).includes('Observation/obs-c-lab'));
    // A compartment search of another patient is that search within her own compartment too: nothing.
    const mine = await fhir(p, t, 'GET', `/${vault}/Patient/mother/Observation`);
    assert.deepEqual(ids(mine.json), ['Observation/obs-m-lab', 'Observation/obs-m-vital']);
    const childs = await fhir(p, t, 'GET', `/${vault}/Patient/child/Observation?_total=accurate`);
    assert.equal(childs.status, 200);
    assert.deepEqual(ids(childs.json), []);
    assert.equal(childs.json.total, 0);
    assert.equal((await fhir(p, t, 'GET', `/${vault}/Patient/mother/Condition`)).status, 403, 'unticked');
  });

  test('I08 I09: read scopes do not write', async () => {
    const obs = {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      subject: { reference: 'Patient/mother' },
    };
    const r = await fhir(p, t, 'POST', `/${vault}/Observation`, obs);
    assert.equal(r.status, 403);
    assert.match(r.headers.get('www-authenticate') ?? '', /insufficient_scope/);
  });

  test('I11 I12: granular patient scopes filter searches and refuse reads outside them', async () => {
    const g = as(
      await tokens({}, { scope: `launch/patient patient/Observation.rs?category=${encodeURIComponent(LAB)}` }),
    );
    assert.deepEqual(ids((await fhir(p, g, 'GET', `/${vault}/Observation?patient=mother`)).json), [
      'Observation/obs-m-lab',
    ]);
    assert.equal((await fhir(p, g, 'GET', `/${vault}/Observation/obs-m-vital`)).status, 403);
    assert.equal((await fhir(p, g, 'GET', `/${vault}/Observation/obs-m-lab`)).status, 200);
  });

  test('chains, _has and conditions answer only about what the token may search', async () => {
    // About the child, observed by the mother: in her compartment, so her app reads it — but not the child.
    const { loader } = await fullAccess('loader-chains');
    const shared = {
      resourceType: 'Observation',
      id: 'obs-chain',
      status: 'final',
      code: { text: 'seen by mother' },
      subject: { reference: 'Patient/child' },
      performer: [{ reference: 'Patient/mother' }],
    };
    assert.equal((await fhir(p, loader, 'PUT', `/${vault}/Observation/obs-chain`, shared)).status, 201);
    assert.equal((await fhir(p, t, 'GET', `/${vault}/Observation/obs-chain`)).status, 200);
    const search = async (caller: Caller, query: string) => {
      const r = await fhir(p, caller, 'GET', `/${vault}/${query}`);
      assert.equal(r.status, 200, `${query}: ${r.text}`);
      return ids(r.json);
    };
    // The chain would say the child's given name is Bram.
    assert.deepEqual(await search(t, 'Observation?subject:Patient.given=Bram'), []);
    assert.deepEqual(await search(t, 'Observation?subject:Patient.given=Anna'), [
      'Observation/obs-m-lab',
      'Observation/obs-m-vital',
    ]);
    assert.deepEqual(await search(t, 'Observation?_filter=subject:Patient.given eq Bram'), []);
    assert.deepEqual(await search(t, 'Observation?performer:Patient._has:Observation:subject:_id=obs-c-lab'), []);
    // Conditions are a type the token may not search at all: _has into them is refused, not answered.
    const denied = await fhir(p, t, 'GET', `/${vault}/Patient?_has:Condition:patient:_id=cond-1`);
    assert.equal(denied.status, 403);
    assert.match(denied.headers.get('www-authenticate') ?? '', /insufficient_scope/);
    assert.equal(
      (await fhir(p, t, 'GET', `/${vault}/Observation?subject:Patient._has:Condition:patient:_id=cond-1`)).status,
      403,
    );
    // Granular: only laboratory Observations, so _has does not tell that she has vital signs.
    const lab = as(
      await tokens(
        {},
        { scope: `launch/patient patient/Patient.rs patient/Observation.rs?category=${encodeURIComponent(LAB)}` },
      ),
    );
    assert.deepEqual(await search(lab, 'Patient?_has:Observation:patient:category=vital-signs'), []);
    assert.deepEqual(await search(lab, 'Patient?_has:Observation:patient:category=laboratory'), ['Patient/mother']);
    // A condition is a search: the child's Observation is no match for her app, so this creates.
    const w = as(await tokens({}, { scope: 'launch/patient patient/Observation.cruds' }));
    const own = {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      subject: { reference: 'Patient/mother' },
    };
    const created = await fhir(p, w, 'POST', `/${vault}/Observation`, own, { 'if-none-exist': '_id=obs-c-lab' });
    assert.equal(created.status, 201, 'a condition matching only what the app may not see matches nothing');
    const chained = await fhir(p, w, 'POST', `/${vault}/Observation`, own, {
      'if-none-exist': 'subject:Patient.given=Bram',
    });
    assert.equal(chained.status, 403, 'the chain searches Patients, which this token may not');
    const id = (created.json as { id: string }).id;
    assert.equal((await fhir(p, loader, 'DELETE', `/${vault}/Observation/${id}`)).status, 204);
    assert.equal((await fhir(p, loader, 'DELETE', `/${vault}/Observation/obs-chain`)).status, 204);
  });

  test('a Binary is in the compartment of the patient its securityContext names, and in none without one', async () => {
    const { loader } = await fullAccess('binary-loader');
    const letter = (id: string, context?: string) => ({
      resourceType: 'Binary',
      id,
      contentType: 'application/pdf',
      data: Buffer.from(`%PDF letter ${id}`).toString('base64'),
      ...(context ? { securityContext: { reference: context } } : {}),
    });
    for (const b of [letter('bin-m', 'Patient/mother'), letter('bin-c', 'Patient/child'), letter('bin-none')]) {
      assert.equal((await fhir(p, loader, 'PUT', `/${vault}/Binary/${b.id}`, b)).status, 201);
    }
    const b = as(await tokens({}, { scope: 'launch/patient patient/Binary.cruds patient/Patient.rs' }));
    assert.equal((await fhir(p, b, 'GET', `/${vault}/Binary/bin-m`)).status, 200);
    // Before, every Binary of the vault was readable here: Binary is outside R4's Patient compartment.
    assert.equal((await fhir(p, b, 'GET', `/${vault}/Binary/bin-c`)).status, 403);
    assert.equal((await fhir(p, b, 'GET', `/${vault}/Binary/bin-none`)).status, 403);
    assert.deepEqual(ids((await fhir(p, b, 'GET', `/${vault}/Binary`)).json), ['Binary/bin-m']);
    const everything = await fhir(p, b, 'GET', `/${vault}/Patient/mother/$everything?_type=Binary`);
    assert.deepEqual(ids(everything.json), ['Binary/bin-m']);
    // Its writes stay inside as well: a Binary about another patient, or about none, is refused.
    const mine = await fhir(p, b, 'POST', `/${vault}/Binary`, letter('x', 'Patient/mother'));
    assert.equal(mine.status, 201, mine.text);
    assert.equal((await fhir(p, b, 'POST', `/${vault}/Binary`, letter('y', 'Patient/child'))).status, 403);
    assert.equal((await fhir(p, b, 'POST', `/${vault}/Binary`, letter('z'))).status, 403);
    // A system client still reads them all.
    assert.equal((await fhir(p, loader, 'GET', `/${vault}/Binary/bin-none`)).status, 200);
  });

  test("a Binary whose securityContext names a document is in the compartment of the document's patient", async () => {
    // R4 Binary.securityContext: the resource named there stands in for the Binary's access. US Core and seed
    // 001 (seq-4) reach a letter as DocumentReference → content.attachment.url → Binary.
    const { loader, put } = await fullAccess('proxy-loader');
    const doc = (patient: string, binary: string) => ({
      status: 'current',
      subject: { reference: `Patient/${patient}` },
      content: [{ attachment: { contentType: 'application/pdf', url: `Binary/${binary}` } }],
    });
    const letter = (context?: string) => ({
      resourceType: 'Binary',
      contentType: 'application/pdf',
      data: Buffer.from(`%PDF ${context}`).toString('base64'),
      ...(context ? { securityContext: { reference: context } } : {}),
    });
    await put('Organization', 'proxy-org', { name: 'Clinic' });
    await put('DocumentReference', 'doc-m', doc('mother', 'pdf-m'));
    await put('DocumentReference', 'doc-c', doc('child', 'pdf-c'));
    await put('Binary', 'pdf-m', letter('DocumentReference/doc-m'));
    await put('Binary', 'pdf-c', letter('DocumentReference/doc-c'));
    await put('Binary', 'pdf-org', letter('Organization/proxy-org'));
    await put('Binary', 'pdf-gone', letter('DocumentReference/doc-missing'));

    const scope = 'launch/patient patient/Binary.cruds patient/DocumentReference.cruds patient/Patient.rs';
    const b = as(await tokens({}, { scope }));
    const docs = await fhir(p, b, 'GET', `/${vault}/DocumentReference?_id=doc-m,doc-c`);
    type Doc = { resource: { content: { attachment: { url?: string } }[] } };
    const url = (docs.json.entry as Doc[])[0]?.resource.content[0]?.attachment.url;
    assert.equal(url, 'Binary/pdf-m');
    const bytes = await p.fetch(`${fhirBase}/${url}`, {
      dispatcher: p.agent(),
      headers: { authorization: `Bearer ${b.token}`, accept: 'application/pdf' },
    });
    assert.equal(bytes.status, 200);
    assert.equal(await bytes.text(), '%PDF DocumentReference/doc-m');
    for (const other of ['pdf-c', 'pdf-org', 'pdf-gone']) {
      assert.equal((await fhir(p, b, 'GET', `/${vault}/Binary/${other}`)).status, 403, other);
    }
    const listed = ids((await fhir(p, b, 'GET', `/${vault}/Binary?_count=100`)).json);
    assert.ok(listed.includes('Binary/pdf-m') && listed.includes('Binary/bin-m'), listed.join());
    assert.ok(!listed.some((r) => ['Binary/pdf-c', 'Binary/pdf-org', 'Binary/pdf-gone'].includes(r)), listed.join());
    const everything = ids((await fhir(p, b, 'GET', `/${vault}/Patient/mother/$everything?_type=Binary`)).json);
    assert.ok(everything.includes('Binary/pdf-m') && !everything.includes('Binary/pdf-c'), everything.join());
    // The read's AuditEvent names whom the letter is about.
    const trail = await secretClient(p, 'proxy-auditor', 'system/AuditEvent.rs');
    const events = await auditEvents<{ entity: { what: { reference: string } }[] }>(
      p,
      trail,
      'entity=Binary/pdf-m&subtype=read',
    );
    assert.ok(events.length > 0);
    for (const e of events)
      assert.ok(
        e.entity.some((x) => x.what.reference === 'Patient/mother'),
        JSON.stringify(e),
      );

    // Writes: by her document, or by one written before it in the same transaction; not by another's.
    const mine = await fhir(p, b, 'POST', `/${vault}/Binary`, letter('DocumentReference/doc-m'));
    assert.equal(mine.status, 201, mine.text);
    assert.equal((await fhir(p, b, 'POST', `/${vault}/Binary`, letter('DocumentReference/doc-c'))).status, 403);
    const bundle = (patient: string) => ({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: 'urn:uuid:8f1c6a4e-3f55-4f40-9a57-0f6f1c1d2e3a',
          request: { method: 'POST', url: 'DocumentReference' },
          resource: { resourceType: 'DocumentReference', ...doc(patient, 'x') },
        },
        {
          request: { method: 'POST', url: 'Binary' },
          resource: letter('urn:uuid:8f1c6a4e-3f55-4f40-9a57-0f6f1c1d2e3a'),
        },
      ],
    });
    const both = await fhir(p, b, 'POST', `/${vault}`, bundle('mother'));
    assert.equal(both.status, 200, both.text);
    assert.equal((await fhir(p, b, 'POST', `/${vault}`, bundle('child'))).status, 403);

    // The document moves to another patient: the letter goes with it.
    await put('DocumentReference', 'doc-m', doc('child', 'pdf-m'));
    assert.equal((await fhir(p, b, 'GET', `/${vault}/Binary/pdf-m`)).status, 403);
    assert.equal((await fhir(p, loader, 'GET', `/${vault}/Binary/pdf-m`)).status, 200);
  });

  test('an older version is shown only if it passes the restrictions itself (vread, history, batch, $meta)', async () => {
    const { loader, put: putAny } = await fullAccess('versions-loader');
    const put = (id: string, body: Record<string, unknown>) => putAny('Observation', id, body);
    const category = (code: string) => [
      { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code }] },
    ];
    // Filed under the child by mistake, then corrected to the mother: version 1 is the child's record.
    await put('obs-misfiled', {
      status: 'final',
      code: { text: "the child's result" },
      subject: { reference: 'Patient/child' },
    });
    await put('obs-misfiled', {
      status: 'final',
      code: { text: 'her result' },
      subject: { reference: 'Patient/mother' },
    });
    // Recorded as a vital sign, then reclassified as laboratory.
    const obs = { status: 'final', code: { text: 'glucose' }, subject: { reference: 'Patient/mother' } };
    await put('obs-reclassified', { ...obs, category: category('vital-signs'), note: [{ text: 'first' }] });
    await put('obs-reclassified', { ...obs, category: category('laboratory') });

    const versions = async (caller: Caller, id: string) => {
      const r = await fhir(p, caller, 'GET', `/${vault}/Observation/${id}/_history`);
      assert.equal(r.status, 200, r.text);
      type Entry = { resource: { meta: { versionId: string } } };
      return ((r.json.entry ?? []) as Entry[]).map((e) => e.resource.meta.versionId);
    };
    const vread = async (caller: Caller, id: string, v: number) =>
      (await fhir(p, caller, 'GET', `/${vault}/Observation/${id}/_history/${v}`)).status;
    assert.equal(await vread(t, 'obs-misfiled', 2), 200);
    assert.equal(await vread(t, 'obs-misfiled', 1), 403, "before, her app read the child's version");
    assert.deepEqual(await versions(t, 'obs-misfiled'), ['2']);
    const meta = await fhir(p, t, 'GET', `/${vault}/Observation/obs-misfiled/_history/1/$meta`);
    assert.equal(meta.status, 403);
    const batch = await fhir(p, t, 'POST', `/${vault}`, {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [1, 2].map((v) => ({ request: { method: 'GET', url: `Observation/obs-misfiled/_history/${v}` } })),
    });
    type BatchEntry = { response: { status: string } };
    assert.deepEqual(
      (batch.json.entry as BatchEntry[]).map((e) => e.response.status.slice(0, 3)),
      ['403', '200'],
    );
    // Granular: the laboratory results only — the version recorded as a vital sign stays closed.
    const lab = as(
      await tokens({}, { scope: `launch/patient patient/Observation.rs?category=${encodeURIComponent(LAB)}` }),
    );
    assert.equal(await vread(lab, 'obs-reclassified', 2), 200);
    assert.equal(await vread(lab, 'obs-reclassified', 1), 403);
    assert.deepEqual(await versions(lab, 'obs-reclassified'), ['2']);
    // Unnarrowed, every version is there.
    assert.deepEqual(await versions(t, 'obs-reclassified'), ['2', '1']);
    assert.deepEqual(await versions(loader, 'obs-misfiled'), ['2', '1']);
  });

  test("a Binary's bytes are read only where its securityContext's resource may be read", async () => {
    const { loader, put } = await fullAccess('scope-proxy-loader');
    const NOTE = 'http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category|clinical-note';
    const [system, code] = NOTE.split('|');
    const doc = (category?: string) => ({
      status: 'current',
      subject: { reference: 'Patient/mother' },
      ...(category ? { category: [{ coding: [{ system, code: category }] }] } : {}),
      content: [{ attachment: { contentType: 'application/pdf' } }],
    });
    const letter = (context?: string) => ({
      contentType: 'application/pdf',
      data: Buffer.from(`%PDF ${context}`).toString('base64'),
      ...(context ? { securityContext: { reference: context } } : {}),
    });
    await put('DocumentReference', 'sp-note', doc(code));
    await put('DocumentReference', 'sp-psych', doc('psychiatry'));
    await put('Binary', 'sp-note-pdf', letter('DocumentReference/sp-note'));
    await put('Binary', 'sp-psych-pdf', letter('DocumentReference/sp-psych'));
    await put('Binary', 'sp-gone-pdf', letter('DocumentReference/sp-never-written'));
    await put('Binary', 'sp-own-pdf', letter('Patient/mother'));
    const read = async (caller: Caller, id: string) => (await fhir(p, caller, 'GET', `/${vault}/Binary/${id}`)).status;
    const listed = async (caller: Caller) =>
      ids((await fhir(p, caller, 'GET', `/${vault}/Binary?_id=sp-note-pdf,sp-psych-pdf,sp-gone-pdf,sp-own-pdf`)).json);

    // Her app may read Binaries of her compartment but no DocumentReference: the documents' bytes stay closed.
    const noDocs = as(await tokens({}, { scope: 'launch/patient patient/Binary.rs patient/Patient.rs' }));
    assert.equal(await read(noDocs, 'sp-note-pdf'), 403, 'before, a Binary scope alone read every document');
    assert.equal(await read(noDocs, 'sp-own-pdf'), 200);
    assert.deepEqual(await listed(noDocs), ['Binary/sp-own-pdf']);
    // Granular: the clinical notes only — the psychiatric letter's bytes too stay closed.
    const granular = `patient/DocumentReference.rs?category=${encodeURIComponent(NOTE)}`;
    const notes = as(await tokens({}, { scope: `launch/patient patient/Binary.rs patient/Patient.rs ${granular}` }));
    assert.equal((await fhir(p, notes, 'GET', `/${vault}/DocumentReference/sp-psych`)).status, 403);
    assert.equal(await read(notes, 'sp-psych-pdf'), 403);
    assert.equal(await read(notes, 'sp-note-pdf'), 200);
    assert.deepEqual((await listed(notes)).sort(), ['Binary/sp-note-pdf', 'Binary/sp-own-pdf']);
    const everything = await fhir(p, notes, 'GET', `/${vault}/Patient/mother/$everything?_type=Binary`);
    assert.ok(!ids(everything.json).includes('Binary/sp-psych-pdf'), ids(everything.json).join());
    // With every document type the app reads them all, as before.
    const all = as(await tokens({}, { scope: 'launch/patient patient/Binary.rs patient/DocumentReference.rs' }));
    assert.equal(await read(all, 'sp-psych-pdf'), 200);

    // A system client alike: Binary.rs alone reads no document's bytes; a missing document decides nothing more.
    const bytesOnly = await secretClient(p, 'scope-proxy-bytes', 'system/Binary.rs');
    await grant(p, { partition: vault, client: 'scope-proxy-bytes', scope: 'system/*.rs' });
    for (const id of ['sp-note-pdf', 'sp-gone-pdf', 'sp-own-pdf']) assert.equal(await read(bytesOnly, id), 403, id);
    assert.deepEqual(await listed(bytesOnly), []);
    // Its history of every Binary would show them: refused like any narrowed type history.
    assert.equal((await fhir(p, bytesOnly, 'GET', `/${vault}/Binary/_history`)).status, 403);
    assert.equal((await fhir(p, bytesOnly, 'GET', `/${vault}/Binary/$meta`)).status, 403);
    const withNotes = await secretClient(
      p,
      'scope-proxy-notes',
      `system/Binary.rs system/Patient.rs system/DocumentReference.rs?category=${encodeURIComponent(NOTE)}`,
    );
    await grant(p, { partition: vault, client: 'scope-proxy-notes', scope: 'system/*.rs' });
    assert.deepEqual((await listed(withNotes)).sort(), ['Binary/sp-note-pdf', 'Binary/sp-own-pdf']);
    // A granular query this server does not understand closes that type's Binaries, not every Binary.
    const odd = await secretClient(
      p,
      'scope-proxy-odd',
      'system/Binary.rs system/Patient.rs system/Observation.rs?x=1',
    );
    await grant(p, { partition: vault, client: 'scope-proxy-odd', scope: 'system/*.rs' });
    assert.equal((await fhir(p, odd, 'GET', `/${vault}/Observation?_count=1`)).status, 400);
    assert.equal(await read(odd, 'sp-own-pdf'), 200);
    assert.equal((await fhir(p, loader, 'GET', `/${vault}/Binary/_history?_count=1`)).status, 200);

    // Writes alike: Binary write scopes alone neither replace nor delete a document's bytes, nor attach new ones.
    const writer = await secretClient(p, 'scope-proxy-writer', 'system/Binary.cruds system/Patient.rs');
    await grant(p, { partition: vault, client: 'scope-proxy-writer', scope: 'system/*.cruds' });
    const replaced = await fhir(p, writer, 'PUT', `/${vault}/Binary/sp-note-pdf`, {
      resourceType: 'Binary',
      id: 'sp-note-pdf',
      ...letter('Patient/mother'),
    });
    assert.equal(replaced.status, 403, replaced.text);
    assert.equal((await fhir(p, writer, 'DELETE', `/${vault}/Binary/sp-note-pdf`)).status, 403);
    const attach = await fhir(p, writer, 'POST', `/${vault}/Binary`, {
      resourceType: 'Binary',
      ...letter('DocumentReference/sp-note'),
    });
    assert.equal(attach.status, 403);
    assert.match(attach.text, /securityContext DocumentReference\/sp-note/);
    for (const context of ['Patient/mother', undefined]) {
      const r = await fhir(p, writer, 'POST', `/${vault}/Binary`, { resourceType: 'Binary', ...letter(context) });
      assert.equal(r.status, 201, r.text);
    }
    assert.equal((await fhir(p, loader, 'GET', `/${vault}/Binary/sp-note-pdf`)).status, 200, 'still there');
    // Her app with clinical notes only: it may replace a note's bytes, not the psychiatric letter's.
    const noteWriter = as(
      await tokens({}, { scope: `launch/patient patient/Binary.cruds patient/Patient.rs ${granular}` }),
    );
    const again = (id: string, context: string) =>
      fhir(p, noteWriter, 'PUT', `/${vault}/Binary/${id}`, { resourceType: 'Binary', id, ...letter(context) });
    assert.equal((await again('sp-note-pdf', 'DocumentReference/sp-note')).status, 200);
    assert.equal((await again('sp-psych-pdf', 'DocumentReference/sp-psych')).status, 403);
    assert.equal((await again('sp-note-pdf', 'DocumentReference/sp-psych')).status, 403, 'nor move it there');
    // Moved to the note by someone who may: its earlier version, the psychiatric letter's, stays closed.
    await put('Binary', 'sp-psych-pdf', letter('DocumentReference/sp-note'));
    assert.equal(await read(notes, 'sp-psych-pdf'), 200);
    const first = await fhir(p, notes, 'GET', `/${vault}/Binary/sp-psych-pdf/_history/1`);
    assert.equal(first.status, 403);
  });

  test('patient/ write scopes write inside the compartment only', async () => {
    const w = as(await tokens({}, { scope: 'launch/patient patient/Observation.cruds' }));
    const mine = {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'peak flow' },
      subject: { reference: 'Patient/mother' },
    };
    assert.equal((await fhir(p, w, 'POST', `/${vault}/Observation`, mine)).status, 201);
    const theirs = { ...mine, subject: { reference: 'Patient/child' } };
    assert.equal((await fhir(p, w, 'POST', `/${vault}/Observation`, theirs)).status, 403);
    assert.equal(
      (await fhir(p, w, 'PUT', `/${vault}/Observation/obs-c-lab`, { ...theirs, id: 'obs-c-lab' })).status,
      403,
    );
    assert.equal((await fhir(p, w, 'DELETE', `/${vault}/Observation/obs-c-lab`)).status, 403);
    // Moving one of mine to another patient is refused as well.
    assert.equal(
      (await fhir(p, w, 'PUT', `/${vault}/Observation/obs-m-lab`, { ...theirs, id: 'obs-m-lab' })).status,
      403,
    );
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ request: { method: 'POST', url: 'Observation' }, resource: theirs }],
    };
    assert.equal((await fhir(p, w, 'POST', `/${vault}`, bundle)).status, 403);
    assert.equal((await fhir(p, auditor, 'GET', `/${vault}/Observation/obs-c-lab`)).status, 200);
  });

  test('patient/ writes stay in the launch patient\u2019s record: nothing that is also another patient\u2019s', async () => {
    const w = as(await tokens({}, { scope: 'launch/patient patient/Observation.cruds' }));
    // In the mother's compartment through `performer`, and in the child's through `subject`: about the child.
    const aboutChild = {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'observed by mother' },
      subject: { reference: 'Patient/child' },
      performer: [{ reference: 'Patient/mother' }],
    };
    const created = await fhir(p, w, 'POST', `/${vault}/Observation`, aboutChild);
    assert.equal(created.status, 403, 'a patient app does not write into another patient’s record');
    assert.match(String((created.json.issue as { diagnostics: string }[])[0]?.diagnostics), /Patient\/child/);
    // One such Observation written by the vault's loader: the mother's app may read it (it is in her compartment)
    // but neither change nor delete it, nor take it over by moving its subject.
    const { loader } = await fullAccess('loader-shared');
    await fhir(p, loader, 'PUT', `/${vault}/Observation/obs-shared`, { ...aboutChild, id: 'obs-shared' });
    assert.equal((await fhir(p, w, 'GET', `/${vault}/Observation/obs-shared`)).status, 200);
    const takeOver = { ...aboutChild, id: 'obs-shared', subject: { reference: 'Patient/mother' } };
    assert.equal((await fhir(p, w, 'PUT', `/${vault}/Observation/obs-shared`, takeOver)).status, 403);
    assert.equal((await fhir(p, w, 'DELETE', `/${vault}/Observation/obs-shared`)).status, 403);
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ request: { method: 'POST', url: 'Observation' }, resource: aboutChild }],
    };
    assert.equal((await fhir(p, w, 'POST', `/${vault}`, bundle)).status, 403);
    const stored = await fhir(p, loader, 'GET', `/${vault}/Observation/obs-shared`);
    assert.equal((stored.json.subject as { reference: string }).reference, 'Patient/child');
    // Her own, observed by her: written as before.
    const own = { ...aboutChild, subject: { reference: 'Patient/mother' } };
    assert.equal((await fhir(p, w, 'POST', `/${vault}/Observation`, own)).status, 201);
    assert.equal((await fhir(p, loader, 'DELETE', `/${vault}/Observation/obs-shared`)).status, 204);
  });

  test('user/ scopes reach the whole vault the user may use, bounded by what the user may do', async () => {
    const u = as(await tokens({}, { scope: 'openid user/Observation.rs user/Patient.rs' }));
    assert.equal((await fhir(p, u, 'GET', `/${vault}/Observation/obs-c-lab`)).status, 200);
    assert.equal((await fhir(p, u, 'GET', `/${vault}/Patient/child`)).status, 200);
    assert.equal((await fhir(p, u, 'DELETE', `/${vault}/Observation/obs-c-lab`)).status, 403);
  });
});

describe('delegates (seed 004 proxies)', () => {
  let bobVault: string;
  before(async () => {
    ({ partition: bobVault } = await familyVault(p, 'urn:cara:account:devries', 'loader2'));
    await addPerson(p, 'bob', PASSWORD, { account: 'urn:cara:account:devries', fhirUser: 'Patient/mother' });
    await addDelegation(p, 'bob', 'urn:cara:account:jansen', 'child');
  });

  test('the picker lists own and delegated patients; the token is bound to the picked one', async () => {
    const launch = await authorizeUrl({ aud: p.fhirBase });
    const d = driver();
    const consent = await d.authorize(launch.url.href, {
      username: 'bob',
      password: PASSWORD,
      decision: undefined,
      patient: 'none',
    });
    // The driver posts "none", which is not offered: the page comes back asking for a patient.
    assert.ok(!(consent instanceof URL));
    assert.equal(consent.status, 400);
    assert.match(consent.html, /Choose the patient/);
    const values = [...consent.html.matchAll(/name="patient" value="([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(values.sort(), [`${bobVault}/mother`, `${vault}/child`].sort());
    assert.match(consent.html, /Bram Jansen/);
    // Names and birth dates shown are patient data read: audited per vault, with bob as the user.
    const { events } = await p.store.audit.search({
      agent: ['bob'],
      subtype: ['http://hl7.org/fhir/restful-interaction|search-type'],
      limit: 100,
      offset: 0,
    });
    const shown = events
      .map((e) => JSON.parse(e) as { outcomeDesc?: string; entity?: { what?: { reference?: string } }[] })
      .filter((e) => e.outcomeDesc === 'patients offered in the launch patient picker')
      .map((e) => (e.entity ?? []).map((x) => x.what?.reference).filter((r) => r?.startsWith('Patient/')));
    assert.ok(
      shown.some((refs) => refs.includes('Patient/child')),
      JSON.stringify(shown),
    );
    assert.ok(
      shown.some((refs) => refs.includes('Patient/mother')),
      JSON.stringify(shown),
    );
  });

  test('acting for the child: read only, child only, that vault only', async () => {
    const launch = await authorizeUrl({ aud: p.fhirBase });
    const callback = await driver().authorize(launch.url.href, {
      username: 'bob',
      password: PASSWORD,
      patient: `${vault}/child`,
    });
    assert.ok(callback instanceof URL);
    const t = await client.authorizationCodeGrant(app, callback, {
      pkceCodeVerifier: launch.verifier,
      expectedState: launch.state,
    });
    assert.equal(t.patient, 'child');
    const c = as(t);
    assert.equal((await fhir(p, c, 'GET', `/${vault}/Patient/child`)).status, 200);
    assert.equal((await fhir(p, c, 'GET', `/${vault}/Patient/mother`)).status, 403);
    assert.deepEqual(ids((await fhir(p, c, 'GET', `/${vault}/Observation`)).json), ['Observation/obs-c-lab']);
    assert.equal((await fhir(p, c, 'GET', `/${bobVault}/Patient/mother`)).status, 404);
    const write = await tokens(
      { username: 'bob', password: PASSWORD, patient: `${vault}/child` },
      { aud: p.fhirBase, scope: 'launch/patient patient/Observation.cruds' },
    );
    const obs = {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      subject: { reference: 'Patient/child' },
    };
    const denied = await fhir(p, as(write), 'POST', `/${vault}/Observation`, obs);
    assert.equal(denied.status, 403);
    assert.match(String((denied.json.issue as { diagnostics: string }[])[0]?.diagnostics), /user may not/);
  });

  test('user/ scopes of a delegate reach the patient they act for, not the rest of that vault', async () => {
    const t = await tokens(
      { username: 'bob', password: PASSWORD },
      { aud: `${p.fhirBase}/${vault}`, scope: 'openid user/*.rs' },
    );
    assert.equal(t.patient, undefined, 'no patient context: user scopes only');
    const u = as(t);
    // Before: the whole vault — the mother's record included — was readable by the child's proxy.
    assert.equal((await fhir(p, u, 'GET', `/${vault}/Patient/mother`)).status, 403);
    assert.equal((await fhir(p, u, 'GET', `/${vault}/Patient/child`)).status, 200);
    assert.deepEqual(ids((await fhir(p, u, 'GET', `/${vault}/Observation`)).json), ['Observation/obs-c-lab']);
    assert.deepEqual(ids((await fhir(p, u, 'GET', `/${vault}/Patient`)).json), ['Patient/child']);
    assert.deepEqual(ids((await fhir(p, u, 'GET', `/${vault}/Observation?subject=Patient/mother`)).json), []);
    assert.equal((await fhir(p, u, 'GET', `/${vault}/Patient/mother/$everything`)).status, 403);
    const both = ['Observation/obs-c-lab', 'Patient/child'];
    assert.deepEqual(ids((await fhir(p, u, 'GET', `/${vault}/?_type=Patient,Observation`)).json).sort(), both);
    assert.deepEqual(
      ids((await fhir(p, u, 'GET', `/${vault}/Patient?_revinclude=Observation:subject`)).json).sort(),
      both,
    );
    assert.equal((await fhir(p, u, 'GET', `/${vault}/_history`)).status, 403);
    // Outside the patient compartment (a Practitioner) stays readable, as with patient/ scopes.
    assert.equal((await fhir(p, u, 'GET', `/${vault}/Practitioner/dr-who`)).status, 200);
  });

  test('carevault user undelegate: tokens for that patient stop at once, also beside another delegation there', async () => {
    await addPerson(p, 'cas', PASSWORD);
    await addDelegation(p, 'cas', 'urn:cara:account:jansen', 'child');
    await addDelegation(p, 'cas', 'urn:cara:account:jansen', 'mother');
    const forChild = as(
      await tokens({ username: 'cas', password: PASSWORD, patient: `${vault}/child` }, { aud: p.fhirBase }),
    );
    const user = as(
      await tokens(
        { username: 'cas', password: PASSWORD },
        { aud: `${p.fhirBase}/${vault}`, scope: 'openid user/*.rs' },
      ),
    );
    assert.equal((await fhir(p, forChild, 'GET', `/${vault}/Patient/child`)).status, 200);
    assert.equal((await fhir(p, user, 'GET', `/${vault}/Patient/child`)).status, 200);

    const out = await userUndelegate(p.config, 'cas', { account: 'urn:cara:account:jansen', patient: 'child' });
    assert.equal(out.delegation, 'removed');
    assert.equal(out.consents_withdrawn, 1, 'the consent given for the child goes with the delegation');
    const child = await fhir(p, forChild, 'GET', `/${vault}/Patient/child`);
    assert.equal(child.status, 401, 'the child’s token: its consent withdrawn');
    assert.match(child.headers.get('www-authenticate') ?? '', /invalid_token/);
    assert.equal((await fhir(p, user, 'GET', `/${vault}/Patient/child`)).status, 403);
    assert.equal((await fhir(p, user, 'GET', `/${vault}/Patient/mother`)).status, 200, 'the other delegation stays');
    await assert.rejects(
      userUndelegate(p.config, 'cas', { account: 'urn:cara:account:jansen', patient: 'child' }),
      /no delegation for Patient\/child/,
    );
    const { events } = await p.store.audit.search({
      subtype: ['https://carevault.dev/fhir/CodeSystem/audit-subtype|delegation-ended'],
      limit: 10,
      offset: 0,
    });
    assert.ok(events.some((e) => e.includes('cas no longer acts for Patient/child')));
  });

  test('a vault-specific aud offers only that vault’s patients', async () => {
    const launch = await authorizeUrl({ aud: `${p.fhirBase}/${bobVault}` });
    const stop = await driver().authorize(launch.url.href, { username: 'bob', password: PASSWORD, patient: 'x' });
    assert.ok(!(stop instanceof URL));
    const values = [...stop.html.matchAll(/name="patient" value="([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(values, [`${bobVault}/mother`]);
  });
});

describe('EHR launch (B12, B13, C16, C17, C20, N21, N30)', () => {
  let ehr: Caller;
  let ehrApp: client.Configuration;
  const EHR_REDIRECT = 'https://viewer.example/cb';
  before(async () => {
    ehr = await secretClient(p, 'ehr-host', 'system/*.rs');
    await grant(p, { partition: vault, client: 'ehr-host', scope: 'system/*.rs' });
    const out = await p.register('viewer', {
      auth: 'client_secret_basic',
      redirectUri: [EHR_REDIRECT],
      scope: 'patient/*.rs user/*.rs',
      name: 'Zorgviewer',
    });
    ehrApp = await discover(p.base, 'viewer', client.ClientSecretBasic(out.client_secret as string), p.agent());
    await addPerson(p, 'drwho', PASSWORD);
  });

  const createLaunch = async (body: Record<string, unknown>, token = ehr.token) => {
    const res = await p.fetch(`${p.base}/oauth/launch`, {
      method: 'POST',
      dispatcher: p.agent(),
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json()) as Record<string, string> };
  };

  const launchApp = async (
    launch: string | undefined,
    scope = 'launch openid fhirUser patient/*.rs user/Practitioner.rs',
  ) => {
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const url = client.buildAuthorizationUrl(ehrApp, {
      redirect_uri: EHR_REDIRECT,
      scope,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      aud: fhirBase,
      ...(launch ? { launch } : {}),
    });
    const stop = await driver().authorize(url.href, { username: 'drwho', password: PASSWORD });
    return { stop, verifier, state };
  };

  test('the EHR creates a context; the token response carries patient, encounter, banner, style and fhirUser', async () => {
    const created = await createLaunch({
      iss: fhirBase,
      client_id: 'viewer',
      patient: 'mother',
      encounter: 'enc-1',
      fhirUser: 'Practitioner/dr-who',
    });
    assert.equal(created.status, 201);
    assert.equal(created.json.iss, fhirBase);
    const { stop, verifier, state } = await launchApp(created.json.launch);
    assert.ok(stop instanceof URL, 'redirected back to the app');
    const t = await client.authorizationCodeGrant(ehrApp, stop, { pkceCodeVerifier: verifier, expectedState: state });
    assert.equal(t.patient, 'mother');
    assert.equal(t.encounter, 'enc-1');
    assert.equal(t.need_patient_banner, true);
    const style = await p.fetch(t.smart_style_url as string, { dispatcher: p.agent() });
    assert.equal(style.status, 200);
    assert.equal(typeof ((await style.json()) as Record<string, unknown>).color_background, 'string');
    const fhirUser = t.claims()?.fhirUser as string;
    assert.equal(fhirUser, `${fhirBase}/Practitioner/dr-who`);
    const c = as(t);
    const me = await p.fetch(fhirUser, {
      dispatcher: p.agent(),
      headers: { authorization: `Bearer ${t.access_token}` },
    });
    assert.equal(me.status, 200);
    assert.equal((await fhir(p, c, 'GET', `/${vault}/Encounter/enc-1`)).status, 200);
    assert.equal((await fhir(p, c, 'GET', `/${vault}/Patient/mother`)).status, 200);
    assert.equal((await fhir(p, c, 'GET', `/${vault}/Patient/child`)).status, 403);
  });

  test('B13: a used, unknown or missing launch → invalid_request, no code and no context', async () => {
    const created = await createLaunch({ iss: fhirBase, client_id: 'viewer', patient: 'mother' });
    const first = await launchApp(created.json.launch);
    assert.ok(first.stop instanceof URL && first.stop.searchParams.get('code'));
    for (const launch of [created.json.launch, 'unknown-launch-value-123456', undefined]) {
      const { stop } = await launchApp(launch);
      assert.ok(stop instanceof URL);
      assert.equal(stop.searchParams.get('error'), 'invalid_request', String(launch));
      assert.equal(stop.searchParams.get('code'), null);
    }
    // A launch made for another app is unknown to this one.
    const foreign = await createLaunch({ iss: fhirBase, client_id: 'patient-app', patient: 'mother' });
    const { stop } = await launchApp(foreign.json.launch);
    assert.ok(stop instanceof URL);
    assert.equal(stop.searchParams.get('error'), 'invalid_request');
  });

  test('the launch API checks the host and the context', async () => {
    assert.equal((await createLaunch({ iss: fhirBase, client_id: 'viewer' }, 'not-a-token')).status, 401);
    const stranger = await secretClient(p, 'stranger', 'system/*.rs');
    assert.equal(
      (await createLaunch({ iss: fhirBase, client_id: 'viewer', patient: 'mother' }, stranger.token)).status,
      404,
    );
    const missing = await createLaunch({ iss: fhirBase, client_id: 'viewer', patient: 'nobody' });
    assert.equal(missing.status, 400);
    assert.match(missing.json.error_description as string, /does not exist/);
    assert.equal((await createLaunch({ iss: fhirBase, client_id: 'no-such-app', patient: 'mother' })).status, 400);
    assert.equal((await createLaunch({ iss: fhirBase, client_id: 'viewer', need_patient_banner: 'yes' })).status, 400);
    // A host names only what its own token reads: granular scopes narrow it, and an Encounter needs Encounter read.
    const narrow = await secretClient(p, 'narrow-host', 'system/Patient.rs?_id=mother system/Observation.rs');
    await grant(p, { partition: vault, client: 'narrow-host', scope: 'system/*.rs' });
    const launchAs = (body: Record<string, unknown>) =>
      createLaunch({ iss: fhirBase, client_id: 'viewer', ...body }, narrow.token);
    assert.equal((await launchAs({ patient: 'mother' })).status, 201);
    for (const body of [{ patient: 'child' }, { patient: 'nobody' }, { patient: 'mother', encounter: 'enc-1' }]) {
      const refused = await launchAs(body);
      assert.equal(refused.status, 403, JSON.stringify(body));
      assert.equal(refused.json.error, 'insufficient_scope');
    }
    // Stored launches made by an administrator work the same way.
    const { launch } = await launchFor(p, { partition: vault, clientId: 'viewer', patient: 'child', host: 'ehr-host' });
    const { stop, verifier, state } = await launchApp(launch);
    assert.ok(stop instanceof URL);
    const t = await client.authorizationCodeGrant(ehrApp, stop, { pkceCodeVerifier: verifier, expectedState: state });
    assert.equal(t.patient, 'child');
  });
});

describe('login page: CSRF and brute force', () => {
  test('a form without its CSRF token is refused', async () => {
    const launch = await authorizeUrl();
    const d = driver();
    const page = await d.follow(launch.url.href);
    assert.ok(!(page instanceof URL));
    const action = /action="([^"]+\/login)"/.exec(page.html)?.[1] as string;
    const res = await d.request(new URL(action, p.base).href, {
      method: 'POST',
      body: new URLSearchParams({ username: 'anna', password: PASSWORD }).toString(),
    });
    assert.equal(res.status, 403);
    assert.match(await res.text(), /CSRF/);
  });

  // Leaves anna throttled: keep it after every other test that signs her in.
  test('wrong passwords are refused alike for unknown users, then throttled with Retry-After', async () => {
    const launch = await authorizeUrl();
    const d = driver();
    let page = await d.follow(launch.url.href);
    const attempt = async (username: string, password: string) => {
      assert.ok(!(page instanceof URL));
      const form = formOf(page.html);
      const res = await d.request(new URL(form?.action as string, p.base).href, {
        method: 'POST',
        body: new URLSearchParams({ csrf: form?.csrf as string, username, password }).toString(),
      });
      page = { status: res.status, html: await res.text(), url: '' };
      return res;
    };
    const unknown = await attempt('mallory', 'guess-123');
    assert.equal(unknown.status, 401);
    const unknownText = (page as PageStop).html.match(/role="alert"[^>]*>([^<]+)/)?.[1];
    const wrong = await attempt('anna', 'guess-123');
    assert.equal(wrong.status, 401);
    assert.equal((page as PageStop).html.match(/role="alert"[^>]*>([^<]+)/)?.[1], unknownText);
    for (let i = 0; i < 4; i++) await attempt('anna', `guess-${i}`);
    const throttled = await attempt('anna', PASSWORD);
    assert.equal(throttled.status, 429);
    assert.ok(Number(throttled.headers.get('retry-after')) >= 1);
    // The lockout binds the guesser's address only: anna, signing in from another address, is not locked out.
    const elsewhere = new Agent({ localAddress: '127.0.0.2', connect: { ca: p.ca } });
    try {
      const owner = new LoginDriver(new URL(p.base).origin, elsewhere);
      const own = await authorizeUrl();
      const ownPage = await owner.follow(own.url.href);
      assert.ok(!(ownPage instanceof URL));
      const form = formOf(ownPage.html);
      const res = await owner.request(new URL(form?.action as string, p.base).href, {
        method: 'POST',
        body: new URLSearchParams({ csrf: form?.csrf as string, username: 'anna', password: PASSWORD }).toString(),
      });
      assert.notEqual(res.status, 429, 'the owner signs in from her own address');
      assert.ok(res.status === 303 || res.status === 302 || res.status === 200, `status ${res.status}`);
      assert.doesNotMatch(await res.text(), /not correct|Too many/);
    } finally {
      await elsewhere.close();
    }
    // Still locked from the guessing address.
    assert.equal((await attempt('anna', PASSWORD)).status, 429);
    // Every attempt is audited (issue 5): failures, the throttled one, and earlier successes.
    const { events } = await p.store.audit.search({
      agent: ['anna'],
      subtype: ['urn:ihe:event-type-code|ITI-71', 'http://dicom.nema.org/resources/ontology/DCM|110122'],
      limit: 1000,
      offset: 0,
    });
    const logins = events.map(
      (e) => JSON.parse(e) as { subtype: { code: string }[]; outcome: string; outcomeDesc: string },
    );
    assert.ok(
      logins.some((e) => e.subtype[0]?.code === '110122' && e.outcome === '4' && /throttled/.test(e.outcomeDesc)),
    );
    assert.ok(logins.some((e) => e.subtype[0]?.code === '110122' && e.outcome === '0'));
  });
});

describe('discovery for apps (A11–A17, N01–N04)', () => {
  test('A11 A12 A13 A14: smart-configuration is JSON whatever the Accept, with the capabilities used here', async () => {
    for (const url of [
      `${fhirBase}/.well-known/smart-configuration`,
      `${p.fhirBase}/.well-known/smart-configuration`,
    ]) {
      const res = await p.fetch(url, { dispatcher: p.agent(), headers: { accept: 'text/html' } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
      const doc = (await res.json()) as Record<string, unknown>;
      assert.equal(doc.issuer, p.issuer);
      assert.equal(doc.authorization_endpoint, `${p.base}/oauth/authorize`);
      assert.deepEqual(doc.code_challenge_methods_supported, ['S256']);
      for (const c of [
        'launch-standalone',
        'launch-ehr',
        'client-public',
        'client-confidential-symmetric',
        'sso-openid-connect',
        'context-standalone-patient',
        'context-ehr-patient',
        'context-ehr-encounter',
        'context-banner',
        'context-style',
        'permission-offline',
        'permission-patient',
        'permission-user',
        'permission-v1',
        'permission-v2',
        'authorize-post',
      ]) {
        assert.ok((doc.capabilities as string[]).includes(c), c);
      }
    }
  });

  test('A16 A17: CORS on discovery, metadata and FHIR; the token endpoint only for registered origins', async () => {
    const origin = 'https://app.example';
    for (const path of ['/.well-known/smart-configuration', '/metadata']) {
      const res = await p.fetch(`${fhirBase}${path}`, { dispatcher: p.agent(), headers: { origin } });
      assert.equal(res.headers.get('access-control-allow-origin'), origin, path);
      await res.arrayBuffer();
    }
    const preflight = await p.fetch(`${fhirBase}/Patient/mother`, {
      method: 'OPTIONS',
      dispatcher: p.agent(),
      headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
    });
    assert.equal(preflight.status, 204);
    assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /Authorization/);
    const token = async (o: string) =>
      p.fetch(p.tokenUrl, {
        method: 'POST',
        dispatcher: p.agent(),
        headers: { origin: o, 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=refresh_token&refresh_token=x&client_id=patient-app',
      });
    const allowed = await token(origin);
    assert.equal(allowed.headers.get('access-control-allow-origin'), origin);
    await allowed.arrayBuffer();
    const denied = await token('https://evil.example');
    assert.equal(denied.headers.get('access-control-allow-origin'), null);
    await denied.arrayBuffer();
  });
});
