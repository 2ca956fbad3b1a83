import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { grantAdd, grantList } from '../src/admin/vault.ts';
import { fhir, partition } from './helpers/fhir.ts';
import { decodeJwt, readPair, startPlatform, type TestPlatform } from './helpers/platform.ts';

// CARA compatibility (issue 10 §4): seed 000's literal token request at the Keycloak-shaped URL, CARA's claims
// and scopes, and organizations identified by GLN.
let p: TestPlatform;
let pair: { cert: string; key: string };
const GLN = '7601000000001';

before(async () => {
  p = await startPlatform();
  await partition(p, 'alice_1234');
  await partition(p, 'other_vault');
  pair = readPair(
    await p.register('tcu-bestclinic/scp-importer', {
      auth: 'tls_client_auth',
      scope: 'ns:cara:authx.Reader ns:cara:scp.Contributor ns:cara:scp.Reader',
      orgOid: '2.16.756.5.30.1.178',
      orgGln: GLN,
      accountUrn: 'urn:cara:account:bestclinic/scp-importer',
      role: ['TECHNICAL_USER'],
      out: join(p.dataDir, 'certs'),
    }),
  );
  await grantAdd(p.config, { partition: 'alice_1234', orgGln: GLN, scope: 'system/*.cruds' });
});
after(() => p.stop());

async function caraToken(scope: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await p.fetch(`${p.base}/realms/cara/protocol/openid-connect/token`, {
    method: 'POST',
    dispatcher: p.agent(pair),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: `grant_type=client_credentials&client_id=tcu-bestclinic%2Fscp-importer&scope=${encodeURIComponent(scope)}`,
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe('seed 000 token request, literally', () => {
  test('POST /realms/cara/protocol/openid-connect/token with mTLS and CARA scopes → a token with CARA claims', async () => {
    const r = await caraToken('ns:cara:authx.Reader ns:cara:scp.Contributor');
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(r.json.expires_in, 300);
    assert.equal(r.json.scope, 'ns:cara:authx.Reader ns:cara:scp.Contributor');
    const claims = decodeJwt(r.json.access_token as string).payload;
    assert.equal(claims.client_id, 'tcu-bestclinic/scp-importer');
    assert.equal(claims['cara:orgIdUrn'], 'urn:cara:org_id:2.16.756.5.30.1.178');
    assert.equal(claims['cara:gln'], GLN);
    assert.deepEqual(claims['cara:roles'], ['TECHNICAL_USER']);
    assert.equal(claims['cara:accountUrn'], 'urn:cara:account:bestclinic/scp-importer');
    assert.ok((claims.cnf as Record<string, string>)['x5t#S256'], 'certificate-bound like every mTLS token');
  });

  test('without the certificate the alias refuses like the token endpoint does', async () => {
    const res = await p.fetch(`${p.base}/realms/cara/protocol/openid-connect/token`, {
      method: 'POST',
      dispatcher: p.agent(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials&client_id=tcu-bestclinic%2Fscp-importer',
    });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_client');
  });
});

describe('CARA scopes on vaults granted to a GLN', () => {
  test('ns:cara:scp.Contributor reads and writes where the organization (by GLN) holds a grant', async () => {
    const token = (await caraToken('ns:cara:scp.Contributor')).json.access_token as string;
    const caller = { token, pair };
    const created = await fhir(p, caller, 'POST', '/alice_1234/Patient', { resourceType: 'Patient' });
    assert.equal(created.status, 201, created.text);
    assert.equal((await fhir(p, caller, 'GET', '/alice_1234/Patient')).status, 200);
    assert.equal((await fhir(p, caller, 'GET', '/other_vault/Patient')).status, 404, 'no grant: as if absent');
  });

  test('ns:cara:scp.Reader reads but may not write (403)', async () => {
    const token = (await caraToken('ns:cara:scp.Reader')).json.access_token as string;
    const caller = { token, pair };
    assert.equal((await fhir(p, caller, 'GET', '/alice_1234/Patient')).status, 200);
    const denied = await fhir(p, caller, 'POST', '/alice_1234/Patient', { resourceType: 'Patient' });
    assert.equal(denied.status, 403, denied.text);
  });

  test('grant list shows the GLN; bad GLNs are refused', async () => {
    const grants = (await grantList(p.config, 'alice_1234')) as Record<string, string>[];
    assert.ok(grants.some((g) => g.org_gln === GLN && g.scope === 'system/*.cruds'));
    await assert.rejects(
      grantAdd(p.config, { partition: 'alice_1234', orgGln: '123', scope: 'system/*.rs' }),
      /13 digits/,
    );
    await assert.rejects(
      p.register('bad-gln', { auth: 'client_secret_basic', scope: 'system/*.rs', orgGln: 'x' }),
      /13 digits/,
    );
  });
});
