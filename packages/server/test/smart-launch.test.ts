import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as client from 'openid-client';
import { type Caller, fhir } from './helpers/fhir.ts';
import { LoginDriver, type PageStop } from './helpers/login-driver.ts';
import { discover } from './helpers/oidc-client.ts';
import { addDelegation, addPerson, familyVault, launchFor } from './helpers/people.ts';
import { decodeJwt, startPlatform, type TestPlatform } from './helpers/platform.ts';

// SMART App Launch for people (issue 4): authorization code + PKCE with login and consent pages, refresh,
// launch context, delegates, and the FHIR-side enforcement of patient/ and user/ scopes.
// Inferno-derived checks (standards.md §N) are marked with their row IDs.

const REDIRECT = 'https://app.example/callback';
const PASSWORD = 'correct horse battery';

let p: TestPlatform;
let vault: string;
let fhirBase: string;
let app: client.Configuration;

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
});
after(() => p.stop());

const driver = () => new LoginDriver(new URL(p.base).origin, p.agent());

interface Launch {
  url: URL;
  verifier: string;
  state: string;
}

async function authorizeUrl(params: Record<string, string> = {}): Promise<Launch> {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const url = client.buildAuthorizationUrl(app, {
    redirect_uri: REDIRECT,
    scope: 'openid fhirUser launch/patient offline_access patient/*.rs',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    aud: fhirBase,
    ...params,
  });
  return { url, verifier, state };
}

async function codeFor(launch: Launch, person: Parameters<LoginDriver['authorize']>[1] = {}): Promise<URL> {
  const stop = await driver().authorize(launch.url.href, { username: 'anna', password: PASSWORD, ...person });
  if (!(stop instanceof URL)) throw new Error(`stopped at ${stop.url} (${stop.status}): ${stop.html.slice(0, 300)}`);
  return stop;
}

async function tokens(person: Parameters<LoginDriver['authorize']>[1] = {}, params: Record<string, string> = {}) {
  const launch = await authorizeUrl(params);
  const callback = await codeFor(launch, person);
  return client.authorizationCodeGrant(app, callback, {
    pkceCodeVerifier: launch.verifier,
    expectedState: launch.state,
  });
}

const as = (t: { access_token: string }): Caller => ({ token: t.access_token });

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
