import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { connectViaDirectory, DirectoryError } from '@carevault/sdk';
import { tlsFetch } from '@carevault/sdk/node';
import { fromXml } from '../src/fhir/xml.ts';
import { fhir, partition, secretClient } from './helpers/fhir.ts';
import { type Issued, issue, networkCa, networkJwt } from './helpers/network-pki.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';
import { cli, ok } from './helpers/zorgviewer.ts';

// Issue 13 / seed 003, end to end against real servers: a directory platform (public /directory) and a provider
// platform that trusts the network CA. A consumer that holds only a network certificate looks the provider up,
// reads its CapabilityStatement, gets a token with an x5c assertion and reads FHIR — in JSON and in XML.

const run = promisify(execFile);
const CLIENT_BIN = fileURLToPath(new URL('../../sdk/bin/carevault-client.js', import.meta.url));
const HOSPITAL_OID = '2.16.840.1.113883.3.7204.1';
const CONSUMER = 'consumer.example.org';

describe('directory-based trust: directory → CapabilityStatement → x5c token → FHIR (seed 003)', () => {
  let directory: TestPlatform;
  let provider: TestPlatform;
  let ca: Issued;
  let consumer: Issued;
  let patientId: string;
  let cas: string;
  let files: { cert: string; key: string; ca: string };

  before(async () => {
    [directory, provider] = await Promise.all([
      startPlatform({}, { env: { CAREVAULT_PUBLIC_DIRECTORY: 'on' } }),
      startPlatform(),
    ]);
    ca = await networkCa('Network Root CA');
    consumer = await issue(ca, CONSUMER, { dns: [CONSUMER], organization: 'Consumer Clinic' });
    const caFile = join(provider.dataDir, 'network-ca.pem');
    writeFileSync(caFile, ca.certPem);
    await ok(provider.dataDir, 'trust', 'add', 'network', '--ca', caFile, '--scope', 'system/Patient.rs');
    await partition(provider, 'records');
    const loader = await secretClient(provider, 'loader', 'system/Patient.cruds');
    await ok(
      provider.dataDir,
      'grant',
      'add',
      '--partition',
      'records',
      '--client',
      'loader',
      '--scope',
      'system/Patient.cruds',
    );
    await ok(
      provider.dataDir,
      'grant',
      'add',
      '--partition',
      'records',
      '--community',
      'network',
      '--scope',
      'system/Patient.rs',
    );
    patientId = (
      await fhir(provider, loader, 'POST', '/records/Patient', {
        resourceType: 'Patient',
        name: [{ family: 'Quetelet', given: ['Adolphe'] }],
        birthDate: '1796-02-22',
      })
    ).json.id as string;
    const entry = await ok<Record<string, unknown>>(
      directory.dataDir,
      'directory',
      'add',
      '--org-oid',
      HOSPITAL_OID,
      '--name',
      'Example Hospital',
      '--fhir-base',
      `${provider.fhirBase}/records`,
    );
    assert.equal(entry.organization, `Organization/${HOSPITAL_OID}`);
    cas = `${directory.ca}\n${provider.ca}`;
    files = {
      cert: join(directory.dataDir, 'consumer.pem'),
      key: join(directory.dataDir, 'consumer-key.pem'),
      ca: join(directory.dataDir, 'both-cas.pem'),
    };
    writeFileSync(files.cert, consumer.certPem);
    writeFileSync(files.key, consumer.keyPem);
    writeFileSync(files.ca, cas);
  });
  after(() => Promise.all([directory.stop(), provider.stop()]));

  const anonymous = (path: string, accept = 'application/fhir+json') =>
    directory.fetch(`${directory.issuer}/directory/${path}`, { dispatcher: directory.agent(), headers: { accept } });

  test('the directory answers Organization/<oid> with its contained Endpoint, without a token, in JSON and XML', async () => {
    const res = await anonymous(`Organization/${HOSPITAL_OID}`);
    assert.equal(res.status, 200);
    const org = (await res.json()) as Record<string, unknown> & { contained: Record<string, unknown>[] };
    assert.equal(org.name, 'Example Hospital');
    assert.deepEqual(org.identifier, [{ system: 'urn:ietf:rfc:3986', value: `urn:oid:${HOSPITAL_OID}` }]);
    assert.deepEqual(org.endpoint, [{ reference: '#fhir' }]);
    assert.equal(org.contained[0]?.address, `${provider.fhirBase}/records`);
    assert.equal((org.contained[0]?.connectionType as { code: string } | undefined)?.code, 'hl7-fhir-rest');
    const xml = await anonymous(`Organization/${HOSPITAL_OID}`, 'application/fhir+xml');
    assert.equal(xml.headers.get('content-type'), 'application/fhir+xml; charset=utf-8');
    const text = await xml.text();
    assert.match(text, /<contained><Endpoint><id value="fhir"\/>/);
    assert.deepEqual(await fromXml(text), org);

    for (const query of [
      'name=Example',
      `identifier=urn:oid:${HOSPITAL_OID}`,
      `identifier=urn:ietf:rfc:3986|urn:oid:${HOSPITAL_OID}`,
    ]) {
      const found = (await (await anonymous(`Organization?${query}`)).json()) as {
        entry?: { resource: { id: string } }[];
      };
      assert.deepEqual(
        found.entry?.map((e) => e.resource.id),
        [HOSPITAL_OID],
        query,
      );
    }
    const none = (await (await anonymous('Organization?name=Nowhere')).json()) as { entry?: unknown[] };
    assert.equal(none.entry, undefined);
    assert.equal((await anonymous('Organization/2.16.999')).status, 404);
    assert.equal((await anonymous('Patient')).status, 404, 'the directory serves Organizations only');

    const events = await directory.store.audit.search({
      entity: [`Organization/${HOSPITAL_OID}`],
      limit: 50,
      offset: 0,
    });
    assert.ok(Number(events.total) >= 2, 'every anonymous read is audited');
  });

  test('a directory that is not public answers 401 and says where to read it', async () => {
    const res = await provider.fetch(`${provider.issuer}/directory/Organization/${HOSPITAL_OID}`, {
      dispatcher: provider.agent(),
    });
    assert.equal(res.status, 401);
    assert.match(await res.text(), /not public/);
  });

  test('the provider CapabilityStatement publishes the SMART oauth-uris, register included', async () => {
    const res = await provider.fetch(`${provider.fhirBase}/records/metadata`, { dispatcher: provider.agent() });
    const cs = (await res.json()) as {
      rest: { security: { extension: { url: string; extension: { url: string; valueUri: string }[] }[] } }[];
    };
    const uris = Object.fromEntries(cs.rest[0]?.security.extension[0]?.extension.map((e) => [e.url, e.valueUri]) ?? []);
    assert.deepEqual(Object.keys(uris).sort(), ['authorize', 'introspect', 'register', 'revoke', 'token']);
    assert.equal(uris.token, provider.tokenUrl);
  });

  test('SDK connectViaDirectory: Patient/<id> and Patient?name= as JSON with only the network certificate', async () => {
    const fetch = tlsFetch({ ca: cas, cert: consumer.certPem, key: consumer.keyPem });
    try {
      const client = await connectViaDirectory({
        directory: `${directory.issuer}/directory`,
        organization: `urn:oid:${HOSPITAL_OID}`,
        clientId: CONSUMER,
        certificate: consumer.certPem,
        key: consumer.keyPem,
        fetch,
      });
      assert.equal(client.baseUrl, `${provider.fhirBase}/records`);
      const patient = await client.read<{ resourceType: string; birthDate: string }>('Patient', patientId);
      assert.equal(patient.birthDate, '1796-02-22');
      const bundle = await client.search<{ resourceType: string; id: string }>('Patient', { name: 'Quetelet' });
      assert.deepEqual(
        bundle.entry?.map((e) => e.resource?.id),
        [patientId],
      );
      const member = await ok<Record<string, unknown>>(provider.dataDir, 'client', 'show', CONSUMER);
      assert.equal(member.community, 'network');

      await assert.rejects(
        connectViaDirectory({
          directory: `${directory.issuer}/directory`,
          organization: '2.16.840.1.113883.3.7204.99',
          clientId: CONSUMER,
          certificate: consumer.certPem,
          key: consumer.keyPem,
          fetch,
        }),
        (err: Error) => err instanceof DirectoryError && /not in the directory/.test(err.message),
      );
      // carevault publishes `token` only: a consumer configured for Cerner's quirk alone is told so.
      await assert.rejects(
        connectViaDirectory({
          directory: `${directory.issuer}/directory`,
          organization: HOSPITAL_OID,
          clientId: CONSUMER,
          certificate: consumer.certPem,
          key: consumer.keyPem,
          tokenUriPreference: ['carequality-token'],
          fetch,
        }),
        /names no token URI \(looked for carequality-token; it has token, authorize/,
      );
    } finally {
      await fetch.close();
    }
  });

  test('the same path answers in XML: a token from an x5c assertion, then Accept: application/fhir+xml', async () => {
    const assertion = await networkJwt(consumer, [], CONSUMER, { aud: provider.tokenUrl });
    const token = await provider.fetch(provider.tokenUrl, {
      method: 'POST',
      dispatcher: provider.agent(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'client_credentials',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
      }).toString(),
    });
    const { access_token } = (await token.json()) as { access_token: string };
    const caller = { token: access_token };
    const read = await fhir(provider, caller, 'GET', `/records/Patient/${patientId}`, undefined, {
      accept: 'application/fhir+xml',
    });
    assert.equal(read.status, 200);
    assert.match(read.text, /<birthDate value="1796-02-22"\/>/);
    const search = await fhir(provider, caller, 'GET', '/records/Patient?name=Quetelet', undefined, {
      accept: 'application/fhir+xml',
    });
    const bundle = (await fromXml(search.text)) as { entry: { resource: { id: string } }[] };
    assert.deepEqual(
      bundle.entry.map((e) => e.resource.id),
      [patientId],
    );
  });

  test('npx carevault-client query prints the FHIR JSON answer; a wrong organization is one clear line', async () => {
    const args = [
      CLIENT_BIN,
      'query',
      '--directory',
      `${directory.issuer}/directory`,
      '--organization',
      HOSPITAL_OID,
      '--client-id',
      CONSUMER,
      '--cert',
      files.cert,
      '--key',
      files.key,
      '--ca',
      files.ca,
    ];
    const { stdout } = await run(process.execPath, [...args, `Patient?name=Quetelet`], { timeout: 60_000 });
    const bundle = JSON.parse(stdout) as { resourceType: string; entry: { resource: { id: string } }[] };
    assert.equal(bundle.resourceType, 'Bundle');
    assert.deepEqual(
      bundle.entry.map((e) => e.resource.id),
      [patientId],
    );
    const one = JSON.parse(
      (await run(process.execPath, [...args, `Patient/${patientId}`], { timeout: 60_000 })).stdout,
    );
    assert.equal(one.id, patientId);

    const wrong = await run(process.execPath, [...args.map((a) => (a === HOSPITAL_OID ? '1.2.3.4' : a)), 'Patient'], {
      timeout: 60_000,
    }).catch((e: { code: number; stderr: string }) => e);
    assert.equal((wrong as { code: number }).code, 1);
    assert.match((wrong as { stderr: string }).stderr, /^error: organization 1\.2\.3\.4 is not in the directory/);
    const absolute = await run(process.execPath, [...args, 'https://elsewhere.example/Patient'], {
      timeout: 60_000,
    }).catch((e: { code: number; stderr: string }) => e);
    assert.match((absolute as { stderr: string }).stderr, /must be relative/);
  });

  test('directory add refuses bad entries with a clear error', async () => {
    const bad = await cli(
      directory.dataDir,
      'directory',
      'add',
      '--org-oid',
      'not-an-oid',
      '--name',
      'X',
      '--fhir-base',
      'https://x.example/fhir',
    );
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /not a dotted OID/);
    const http = await cli(
      directory.dataDir,
      'directory',
      'add',
      '--org-oid',
      '1.2.3',
      '--name',
      'X',
      '--fhir-base',
      'http://x.example/fhir',
    );
    assert.match(http.stderr, /must be an https URL/);
  });
});
