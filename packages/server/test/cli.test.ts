import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Agent, fetch } from 'undici';
import { loadConfig } from '../src/config/index.ts';
import { freePort } from './helpers/platform.ts';
import { rawSql } from './helpers/raw-db.ts';
import { withStore } from './helpers/serve.ts';

// The admin CLI and `serve` as separate processes, the way an operator runs them.
const BIN = fileURLToPath(new URL('../bin/carevault.js', import.meta.url));
const run = promisify(execFile);
let dataDir: string;

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args, '--data-dir', dataDir], {
      timeout: 60_000,
      env: withStore(['--data-dir', dataDir]),
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

before(() => {
  dataDir = mkdtempSync(join(tmpdir(), 'carevault-cli-'));
});
after(() => {
  rmSync(dataDir, { recursive: true, force: true });
});

describe('carevault client …', () => {
  test('client add --auth tls_client_auth issues a CA-signed certificate with CN = client_id (seed 000)', async () => {
    const out = join(dataDir, 'certs');
    const r = await cli(
      'client',
      'add',
      'bestclinic-tcu',
      '--auth',
      'tls_client_auth',
      '--scope',
      'system/*.rs',
      '--org-oid',
      '2.16.528.1.1007',
      '--out',
      out,
    );
    assert.equal(r.code, 0, r.stderr);
    const json = JSON.parse(r.stdout) as Record<string, string>;
    assert.equal(json.client_id, 'bestclinic-tcu');
    assert.equal(json.cert, join(out, 'bestclinic-tcu.pem'));
    assert.equal(json.key, join(out, 'bestclinic-tcu-key.pem'));
    assert.equal(json.ca, join(dataDir, 'pki', 'ca.pem'));
    assert.equal(json.client_secret, undefined);
    const cert = new X509Certificate(readFileSync(json.cert as string));
    assert.equal(cert.subject, 'CN=bestclinic-tcu');
    assert.ok(cert.verify(new X509Certificate(readFileSync(json.ca as string)).publicKey));
    assert.equal(statSync(json.key as string).mode & 0o777, 0o600);
  });

  test('client add --auth client_secret_basic prints the secret once; list and show never do', async () => {
    const r = await cli('client', 'add', 'portal', '--auth', 'client_secret_basic', '--scope', 'system/Patient.rs');
    assert.equal(r.code, 0, r.stderr);
    const { client_secret } = JSON.parse(r.stdout) as { client_secret: string };
    assert.ok(client_secret.length >= 40);
    const list = await cli('client', 'list');
    assert.equal(list.code, 0);
    const clients = JSON.parse(list.stdout) as { client_id: string; scope: string }[];
    assert.deepEqual(
      clients.map((c) => c.client_id),
      ['bestclinic-tcu', 'portal'],
    );
    assert.ok(!list.stdout.includes(client_secret) && !list.stdout.includes('sha256:'));
    const show = JSON.parse((await cli('client', 'show', 'portal')).stdout) as { scope: string; disabled: boolean };
    assert.equal(show.scope, 'system/Patient.rs');
    assert.equal(show.disabled, false);
  });

  test('client disable / enable', async () => {
    assert.deepEqual(JSON.parse((await cli('client', 'disable', 'portal')).stdout), {
      client_id: 'portal',
      disabled: true,
    });
    assert.equal(JSON.parse((await cli('client', 'show', 'portal')).stdout).disabled, true);
    assert.equal((await cli('client', 'enable', 'portal')).code, 0);
  });

  test('bad input gets a one-line error and a non-zero exit, never a stack trace', async () => {
    const cases: [string[], RegExp][] = [
      [['client', 'add', 'portal', '--auth', 'client_secret_basic'], /already exists/],
      [['client', 'add', 'x', '--auth', 'bogus'], /Allowed choices/],
      [['client', 'add', 'bad id!', '--auth', 'client_secret_basic'], /client_id must be/],
      [
        ['client', 'add', 'y', '--auth', 'client_secret_basic', '--scope', 'system/Observation.dus'],
        /not a valid SMART scope/,
      ],
      [['client', 'add', 'z', '--auth', 'private_key_jwt'], /exactly one of --jwks/],
      [['client', 'add', 'z', '--auth', 'private_key_jwt', '--jwks', '/nonexistent.json'], /file not found/],
      [['client', 'add', 'w', '--auth', 'tls_client_auth', '--org-oid', 'not-an-oid'], /OID/],
      [['client', 'show', 'nobody'], /not found/],
      // An option of another method is refused, not stored unused: the client would not authenticate as meant.
      [['client', 'add', 'v', '--auth', 'tls_client_auth', '--cert', '/etc/hostname'], /--cert goes with/],
      // Read as a file, a directory was an "unexpected" EISDIR.
      [['client', 'add', 'v', '--auth', 'self_signed_tls_client_auth', '--cert', tmpdir()], /a directory was given/],
      [['client', 'add', 'v', '--auth', 'private_key_jwt', '--jwks', tmpdir()], /not valid JSON|a directory was given/],
      [
        ['client', 'add', 'v', '--auth', 'client_secret_basic', '--jwks-uri', 'https://x.example/jwks'],
        /go with --auth private_key_jwt, not client_secret_basic/,
      ],
    ];
    for (const [args, message] of cases) {
      const r = await cli(...args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, message);
      assert.ok(!/\n\s+at /.test(r.stderr), `stack trace for ${args.join(' ')}: ${r.stderr}`);
    }
    assert.match((await cli('client', 'show', 'v')).stderr, /not found/);
  });
});

describe('carevault account / partition / grant …', () => {
  test('account add makes a vault named after the URN suffix; grants attach clients and organizations', async () => {
    const mpi = 'urn:cara:mpi_id:2.16.756.5.30.1.127.3.10.3/0d7c8f1e-2b3a-4c5d-8e9f-0a1b2c3d4e5f';
    const a = await cli('account', 'add', '--urn', 'urn:cara:account:alice_1234', '--mpi-id', mpi);
    assert.equal(a.code, 0, a.stderr);
    assert.deepEqual(JSON.parse(a.stdout), { accountUrn: 'urn:cara:account:alice_1234', partition: 'alice_1234' });
    const generated = JSON.parse((await cli('account', 'add')).stdout) as { accountUrn: string; partition: string };
    assert.equal(generated.accountUrn, `urn:cara:account:${generated.partition}`);
    assert.equal((await cli('partition', 'add', 'research')).code, 0);
    const list = JSON.parse((await cli('partition', 'list')).stdout) as { partition: string; mpiIds: string[] }[];
    assert.deepEqual(list.find((x) => x.partition === 'alice_1234')?.mpiIds, [mpi]);
    assert.ok(list.some((x) => x.partition === 'research'));

    const g = await cli(
      'grant',
      'add',
      '--partition',
      'alice_1234',
      '--client',
      'bestclinic-tcu',
      '--scope',
      'system/Observation.cruds',
    );
    assert.equal(g.code, 0, g.stderr);
    assert.equal(
      (
        await cli(
          'grant',
          'add',
          '--partition',
          'alice_1234',
          '--org-oid',
          'urn:oid:2.16.528.1',
          '--scope',
          'system/*.rs',
        )
      ).code,
      0,
    );
    const grants = JSON.parse((await cli('grant', 'list', '--partition', 'alice_1234')).stdout) as Record<
      string,
      string
    >[];
    assert.deepEqual(grants, [
      { partition: 'alice_1234', client: 'bestclinic-tcu', scope: 'system/Observation.cruds' },
      { partition: 'alice_1234', org_oid: '2.16.528.1', scope: 'system/*.rs' },
    ]);
  });

  test('bad vault input gets a one-line error', async () => {
    const cases: [string[], RegExp][] = [
      [['account', 'add', '--urn', 'urn:cara:account:alice_1234'], /already exists/],
      [['account', 'add', '--urn', 'urn:other:x'], /urn:cara:account/],
      [['account', 'add', '--mpi-id', 'not-an-mpi-id'], /MPI id/],
      [['partition', 'add', 'bad/name'], /partition name/],
      [['grant', 'add', '--partition', 'nope', '--client', 'bestclinic-tcu', '--scope', 'system/*.rs'], /not found/],
      [
        ['grant', 'add', '--partition', 'alice_1234', '--client', 'nobody', '--scope', 'system/*.rs'],
        /client "nobody" not found/,
      ],
      [
        ['grant', 'add', '--partition', 'alice_1234', '--client', 'bestclinic-tcu', '--scope', 'patient/*.rs'],
        /SMART system scope/,
      ],
      [
        ['grant', 'add', '--partition', 'alice_1234', '--scope', 'system/*.rs'],
        /exactly one of --client, --org-oid, --org-gln or --community/,
      ],
    ];
    for (const [args, message] of cases) {
      const r = await cli(...args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, message);
    }
  });
});

describe('carevault keys …', () => {
  test('keys list shows metadata only; keys rotate adds a key', async () => {
    const list = JSON.parse((await cli('keys', 'list')).stdout) as { kid: string; alg: string; jwk?: unknown }[];
    assert.deepEqual(list.map((k) => k.alg).sort(), ['ES256', 'RS256']);
    assert.ok(list.every((k) => k.jwk === undefined));
    const rotated = JSON.parse((await cli('keys', 'rotate', '--alg', 'ES256', '--activate-after', '0')).stdout) as {
      kid: string;
    };
    const after = JSON.parse((await cli('keys', 'list')).stdout) as { kid: string }[];
    assert.ok(after.some((k) => k.kid === rotated.kid));
    assert.notEqual((await cli('keys', 'rotate', '--activate-after', '-1')).code, 0);
    // 1e99 is an integer to JavaScript: a key that would never sign (or never be unpublished) is refused.
    for (const [option, value] of [
      ['--activate-after', '1e99'],
      ['--retention', '1e99'],
      ['--retention', '315360001'],
    ]) {
      const r = await cli('keys', 'rotate', option as string, value as string);
      assert.notEqual(r.code, 0, `${option} ${value}`);
      assert.match(r.stderr, /at most 315360000/);
    }
    assert.equal((await cli('keys', 'list')).stdout, JSON.stringify(after, null, 2).concat('\n'));
  });
});

describe('carevault serve', () => {
  test('serves HTTPS with the dev PKI, prints issuer, FHIR base and ca.pem, and stops on SIGTERM', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, [BIN, 'serve', '--port', String(port), '--data-dir', dataDir], {
      env: withStore(['--data-dir', dataDir], { ...process.env, CAREVAULT_LOG_LEVEL: 'warn' }),
    });
    let stdout = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const deadline = Date.now() + 30_000;
    while (!stdout.includes('carevault is running') && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    assert.match(stdout, new RegExp(`issuer: +https://localhost:${port}\\n`));
    assert.match(stdout, new RegExp(`FHIR base: +https://localhost:${port}/fhir\\n`));
    assert.ok(stdout.includes(join(dataDir, 'pki', 'ca.pem')));

    const agent = new Agent({ connect: { ca: readFileSync(join(dataDir, 'pki', 'ca.pem')) } });
    const res = await fetch(`https://localhost:${port}/.well-known/openid-configuration`, { dispatcher: agent });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { issuer: string }).issuer, `https://localhost:${port}`);
    // Clients registered by the CLI earlier are served by this process.
    const cert = {
      cert: readFileSync(join(dataDir, 'certs', 'bestclinic-tcu.pem')),
      key: readFileSync(join(dataDir, 'certs', 'bestclinic-tcu-key.pem')),
    };
    const mtls = new Agent({ connect: { ca: readFileSync(join(dataDir, 'pki', 'ca.pem')), ...cert } });
    const token = await fetch(`https://localhost:${port}/oauth/token`, {
      method: 'POST',
      dispatcher: mtls,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials&client_id=bestclinic-tcu',
    });
    assert.equal(token.status, 200);
    await token.arrayBuffer();
    await agent.close();
    await mtls.close();
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  });

  test('invalid configuration is a clear error', async () => {
    const r = await cli('serve', '--port', 'abc');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /port must be an integer/);
    // A host that is not an address or a name failed inside the dev PKI's certificate code ("Invalid IP").
    for (const host of ['999.1.1.1', 'a b', '-x']) {
      const h = await cli('serve', '--port', '0', '--host', host);
      assert.notEqual(h.code, 0, host);
      assert.match(h.stderr, /neither an IP address nor a host name/, host);
      assert.doesNotMatch(h.stderr, /unexpected/, host);
    }
    assert.throws(() => loadConfig({}, { CAREVAULT_LOG_LEVEL: 'loud' }), /must be one of fatal, error, warn, info/);
    assert.equal(loadConfig({}, { CAREVAULT_LOG_LEVEL: 'debug', CAREVAULT_HOST: '::1' }).host, '::1');
  });
});

describe('carevault user / launch …', () => {
  test('user add hashes the password (memory-hard scrypt), reads it from stdin on request, and checks its input', async () => {
    const r = await cli(
      'user',
      'add',
      'alice',
      '--password',
      'a long secret',
      '--account',
      'urn:cara:account:alice_1234',
      '--fhir-user',
      'Patient/p1',
    );
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { username: 'alice', partition: 'alice_1234', fhirUser: 'Patient/p1' });
    const child = spawn(process.execPath, [BIN, 'user', 'add', 'bob', '--password-stdin', '--data-dir', dataDir], {
      env: withStore(['--data-dir', dataDir]),
    });
    child.stdin.end('another secret\n');
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    assert.equal(await new Promise((resolve) => child.on('close', resolve)), 0);
    assert.equal(JSON.parse(out).username, 'bob');
    const list = JSON.parse((await cli('user', 'list')).stdout) as Record<string, unknown>[];
    assert.deepEqual(
      list.map((u) => u.username),
      ['alice', 'bob'],
    );
    assert.ok(!JSON.stringify(list).includes('scrypt'), 'no password hash in the listing');
    for (const [args, message] of [
      [['user', 'add', 'alice', '--password', 'a long secret'], /already exists/],
      [['user', 'add', 'carol', '--password', 'short'], /at least 8/],
      [['user', 'add', 'carol', '--password', 'a long secret', '--account', 'urn:cara:account:nobody'], /not found/],
      [['user', 'add', 'carol', '--password', 'a long secret', '--fhir-user', 'Observation/1'], /relative reference/],
      [['user', 'add', 'bad name', '--password', 'a long secret'], /username/],
      [
        ['user', 'delegate', 'bob', '--account', 'alice_1234', '--patient', 'p1', '--scope', 'patient/*.rs'],
        /system scope/,
      ],
    ] as const) {
      const bad = await cli(...args);
      assert.equal(bad.code, 1, args.join(' '));
      assert.match(bad.stderr, message);
    }
    const d = await cli(
      'user',
      'delegate',
      'bob',
      '--account',
      'urn:cara:account:alice_1234',
      '--patient',
      'Patient/p1',
    );
    assert.equal(d.code, 0, d.stderr);
    assert.deepEqual(JSON.parse(d.stdout), {
      username: 'bob',
      partition: 'alice_1234',
      patient: 'p1',
      scope: 'system/*.rs',
    });
    const revoked = await cli('user', 'revoke', 'alice');
    assert.deepEqual(JSON.parse(revoked.stdout), { username: 'alice', revoked: [] });
  });

  test('launch create makes an EHR launch context for a registered app', async () => {
    assert.equal(
      (
        await cli(
          'client',
          'add',
          'viewer-app',
          '--auth',
          'none',
          '--redirect-uri',
          'https://viewer.example/cb',
          '--scope',
          'patient/*.rs',
          '--name',
          'Zorgviewer',
        )
      ).code,
      0,
    );
    const r = await cli(
      'launch',
      'create',
      '--partition',
      'alice_1234',
      '--client',
      'viewer-app',
      '--fhir-user',
      'Practitioner/dr1',
    );
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { launch: string; iss: string; expires_in: number };
    assert.match(out.launch, /^[\w-]{32}$/);
    // The `serve` test above ran on this data directory: admin commands use that server's base URL.
    const served = JSON.parse(readFileSync(join(dataDir, 'server.json'), 'utf8')) as { baseUrl: string };
    assert.match(served.baseUrl, /^https:\/\/localhost:\d+$/);
    assert.equal(out.iss, `${served.baseUrl}/fhir/alice_1234`);
    assert.equal(out.expires_in, 300);
    const missing = await cli(
      'launch',
      'create',
      '--partition',
      'alice_1234',
      '--client',
      'viewer-app',
      '--patient',
      'nobody',
    );
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /Patient\/nobody does not exist/);
    const unknownApp = await cli('launch', 'create', '--partition', 'alice_1234', '--client', 'nope');
    assert.match(unknownApp.stderr, /registered app/);
  });
});

describe('carevault audit verify', () => {
  test('passes on an intact trail and fails, naming the event, once a row is altered', async () => {
    const bundle = join(dataDir, 'one-patient.json');
    writeFileSync(
      bundle,
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          {
            fullUrl: 'urn:uuid:p',
            request: { method: 'POST', url: 'Patient' },
            resource: { resourceType: 'Patient', gender: 'female' },
          },
        ],
      }),
    );
    const imported = await cli('import', bundle, '--partition', 'alice_1234');
    assert.equal(imported.code, 0, imported.stderr);
    const ok = await cli('audit', 'verify');
    assert.equal(ok.code, 0, ok.stderr);
    const result = JSON.parse(ok.stdout) as { ok: boolean; events: number };
    assert.equal(result.ok, true);
    const [first] = await rawSql<{ seq: number }>(dataDir, 'SELECT MIN(seq) AS seq FROM audit_events');
    const seq = first?.seq;
    if (seq === undefined || seq === null) assert.fail('the CLI commands above should have written audited data');
    await rawSql(dataDir, "UPDATE audit_events SET outcome = '8' WHERE seq = ?", [seq]);
    const bad = await cli('audit', 'verify');
    assert.equal(bad.code, 1);
    const out = JSON.parse(bad.stdout) as { ok: boolean; firstBad: { seq: number } };
    assert.equal(out.ok, false);
    assert.equal(out.firstBad.seq, seq);
  });
});
