/**
 * Token endpoint throughput, measured against a real `carevault serve` child process over HTTPS with
 * keep-alive, next to a raw ES256 sign+verify loop measured in the same run (reference/perf.md: the
 * ceiling for private_key_jwt issuance is about one ES256 verify + one ES256 sign per token).
 *
 *   npm run bench:token            (about 30 s; prints one line per scenario)
 */
import { createSign, createVerify, generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, importJWK, SignJWT } from 'jose';
import { Agent, request } from 'undici';
import { addClient } from '../packages/server/src/admin/clients.ts';
import { loadConfig } from '../packages/server/src/config/index.ts';
import { freePort } from '../packages/server/test/helpers/platform.ts';
import { CONCURRENCY, load, SECONDS, startServer, stopServer } from './lib.ts';

function rawEs256PerSecond(): number {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const data = Buffer.from('x'.repeat(300));
  const end = performance.now() + 2000;
  let n = 0;
  while (performance.now() < end) {
    const sig = createSign('SHA256').update(data).sign({ key: privateKey, dsaEncoding: 'ieee-p1363' });
    createVerify('SHA256').update(data).verify({ key: publicKey, dsaEncoding: 'ieee-p1363' }, sig);
    n++;
  }
  return n / 2;
}

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), 'carevault-bench-'));
  const port = await freePort();
  const config = loadConfig({ dataDir, port }, {});
  const base = `https://localhost:${port}`;

  // Clients: one per method measured, plus a resource server that introspects.
  const mtls = await addClient(config, 'bench-mtls', {
    auth: 'tls_client_auth',
    scope: 'system/*.rs',
    out: join(dataDir, 'c'),
  });
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'b1', alg: 'ES256' };
  writeFileSync(join(dataDir, 'jwks.json'), JSON.stringify({ keys: [jwk] }));
  await addClient(config, 'bench-jwt', {
    auth: 'private_key_jwt',
    jwks: join(dataDir, 'jwks.json'),
    scope: 'system/*.rs',
  });
  const rs = await addClient(config, 'bench-rs', { auth: 'client_secret_basic', scope: 'system/Patient.rs' });

  const child = await startServer(dataDir, port);
  const pid = child.pid as number;
  const ca = readFileSync(join(dataDir, 'pki', 'ca.pem'));
  const plain = new Agent({ connect: { ca }, connections: CONCURRENCY });
  const withCert = new Agent({
    connect: { ca, cert: readFileSync(mtls.cert as string), key: readFileSync(mtls.key as string) },
    connections: CONCURRENCY,
  });
  const form = { 'content-type': 'application/x-www-form-urlencoded' };

  // Client assertions are signed before the clock starts so the client side does not cap the rate.
  const key = await importJWK({ ...(await exportJWK(privateKey)), alg: 'ES256' }, 'ES256');
  const assertions: string[] = [];
  const now = Math.floor(Date.now() / 1000);
  for (let i = 0; i < 60_000; i++) {
    const a = await new SignJWT({
      iss: 'bench-jwt',
      sub: 'bench-jwt',
      aud: `${base}/oauth/token`,
      jti: randomUUID(),
      exp: now + 280,
    })
      .setProtectedHeader({ alg: 'ES256', kid: 'b1' })
      .sign(key);
    assertions.push(
      `grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=${a}`,
    );
  }
  let next = 0;
  const tokenRes = await request(`${base}/oauth/token`, {
    method: 'POST',
    dispatcher: withCert,
    headers: form,
    body: 'grant_type=client_credentials&client_id=bench-mtls',
  });
  const { access_token } = (await tokenRes.body.json()) as { access_token: string };

  const raw = rawEs256PerSecond();
  const results = [
    await load('private_key_jwt (ES256 assertion → ES256 JWT)', pid, plain, () => ({
      url: `${base}/oauth/token`,
      method: 'POST',
      headers: form,
      body: assertions[next++ % assertions.length],
    })),
    await load('tls_client_auth (cert-bound ES256 JWT)', pid, withCert, () => ({
      url: `${base}/oauth/token`,
      method: 'POST',
      headers: form,
      body: 'grant_type=client_credentials&client_id=bench-mtls',
    })),
    await load('introspection of a JWT (client_secret_basic caller)', pid, plain, () => ({
      url: `${base}/oauth/introspect`,
      method: 'POST',
      headers: { ...form, authorization: `Basic ${Buffer.from(`bench-rs:${rs.client_secret}`).toString('base64')}` },
      body: `token=${access_token}`,
    })),
  ];

  console.log(`raw node:crypto ES256 sign+verify pairs: ${raw.toFixed(0)}/s (one core) — the per-token crypto ceiling`);
  // Issue 14's goals, per server CPU-second, in the order of `results`.
  const goals = ['1,700', '2,500', '3,000'];
  for (const [i, r] of results.entries()) {
    console.log(
      `${r.name}: ${r.wall.toFixed(0)}/s wall, ${r.perCpu.toFixed(0)} per server CPU-second, ` +
        `ratio to raw ES256 pair ${(r.perCpu / raw).toFixed(2)}${r.errors ? `, ${r.errors} non-200` : ''} (goal ≥ ${goals[i]})`,
    );
  }
  console.log(
    `(${CONCURRENCY} in flight, keep-alive, ${SECONDS} s each; server: one process, Node ${process.version})`,
  );
  await plain.close();
  await withCert.close();
  await stopServer(child);
  rmSync(dataDir, { recursive: true, force: true });
}

await main();
