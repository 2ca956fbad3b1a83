import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { KeyRing } from '../src/auth/keys.ts';
import { decodeJwt, startPlatform, type TestPlatform } from './helpers/platform.ts';
import { rawSql } from './helpers/raw-db.ts';
import { TEST_STORE } from './helpers/store.ts';

// Signing keys: kept in a 0600 file, rotated "publish before use", old key kept until its tokens expire.
let p: TestPlatform;
let secret: string;

before(async () => {
  p = await startPlatform();
  secret = (await p.register('svc', { auth: 'client_secret_basic', scope: 'system/Patient.rs' }))
    .client_secret as string;
});
after(async () => {
  await p.stop();
});

async function token(): Promise<string> {
  const res = await p.fetch(p.tokenUrl, {
    method: 'POST',
    dispatcher: p.agent(),
    headers: {
      authorization: `Basic ${Buffer.from(`svc:${secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: 'grant_type=client_credentials',
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { access_token: string }).access_token;
}

async function publishedKids(): Promise<string[]> {
  const res = await p.fetch(`${p.base}/oauth/jwks`, { dispatcher: p.agent() });
  return ((await res.json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
}

describe('signing keys', () => {
  test('live in <data-dir>/keys with 0600 permissions and never in the database', async () => {
    const file = join(p.dataDir, 'keys', 'signing-keys.json');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(join(p.dataDir, 'pki', 'server-key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(join(p.dataDir, 'pki', 'ca-key.pem')).mode & 0o777, 0o600);
    const d = p.keys.privateJwks()[0]?.d as string;
    if (TEST_STORE === 'sqlite') {
      const db = readFileSync(join(p.dataDir, 'carevault.sqlite'));
      assert.ok(!db.includes(Buffer.from(d)), 'private key material is not in the database');
    } else {
      const [hits] = await rawSql<{ n: number }>(
        p.dataDir,
        `SELECT (SELECT count(*) FROM clients WHERE metadata LIKE ?) + (SELECT count(*) FROM oidc_payloads WHERE payload LIKE ?) AS n`,
        [`%${d}%`, `%${d}%`],
      );
      assert.equal(Number(hits?.n), 0, 'private key material is not in the database');
    }
  });

  test('a rotated key is published at once but signs only after its activation time', async () => {
    const before = decodeJwt(await token()).header.kid as string;
    const cli = await KeyRing.open(p.dataDir); // as `carevault keys rotate` would, from another process
    const pending = await cli.rotate('ES256', 3600, 86400);
    assert.equal(p.auth.refreshKeys(), true);
    assert.ok((await publishedKids()).includes(pending.kid), 'new key is in the JWKS');
    assert.equal(decodeJwt(await token()).header.kid, before, 'old key still signs until activation');
  });

  test('after activation new tokens use the new key and tokens of the old key still verify', async () => {
    const old = await token();
    const oldKid = decodeJwt(old).header.kid as string;
    const cli = await KeyRing.open(p.dataDir);
    const next = await cli.rotate('ES256', 0, 86400);
    p.auth.refreshKeys();
    const fresh = await token();
    assert.equal(decodeJwt(fresh).header.kid, next.kid);
    const kids = await publishedKids();
    assert.ok(kids.includes(oldKid) && kids.includes(next.kid));
    assert.equal((await p.auth.verifier.verify(old)).client_id, 'svc');
    assert.equal((await p.auth.verifier.verify(fresh)).client_id, 'svc');
  });

  test('keys retired longer ago than the retention period are dropped at the next rotation', async () => {
    const cli = await KeyRing.open(p.dataDir);
    const retired = cli
      .list()
      .filter((k) => k.alg === 'ES256' && k.retiredAt !== undefined)
      .map((k) => k.kid);
    assert.ok(retired.length > 0);
    await cli.rotate('ES256', 0, 0);
    p.auth.refreshKeys();
    const kids = await publishedKids();
    for (const kid of retired) assert.ok(!kids.includes(kid), `${kid} dropped`);
    assert.ok(
      kids.some((k) => k.startsWith('rs256-')),
      'the RS256 key is untouched',
    );
  });

  test('a node whose clock lags the one that made the keys signs with the key active first, not with none', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'carevault-keys-'));
    try {
      const ring = await KeyRing.open(dir);
      const [first] = ring.list().filter((k) => k.alg === 'ES256');
      const made = first?.activateAt as number;
      // Five seconds behind the maker: before, no key was active and the node failed to start.
      assert.equal(ring.signingKid('ES256', made - 5), first?.kid);
      // A rotation made on the lagging node's future keeps the first key signing there until it retires.
      const next = await ring.rotate('ES256', 60, 86400);
      assert.equal(ring.signingKid('ES256', made - 5), first?.kid);
      assert.equal(ring.signingKid('ES256', next.activateAt), next.kid);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
