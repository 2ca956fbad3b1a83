import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { PROPORTION, patientsOf, submission } from './helpers/deqm.ts';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { freePort, startPlatform, type TestPlatform } from './helpers/platform.ts';
import { ok } from './helpers/zorgviewer.ts';

// Issue 12 §3–4 (seed 002): the receiving server asks a program server whether this client may submit for this
// Organization — an AuditEvent either way, nothing stored on a refusal or when the program server is down — and
// every submission gets a Provenance, built from the token when the client sent none.

const ORG_OID = '2.16.840.1.113883.2.4.3.8';
let mode: 'allow' | 'deny' | 'broken' = 'allow';
const asked: Record<string, unknown>[] = [];
let program: Server;
let p: TestPlatform;
let clinic: Caller;

before(async () => {
  program = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      asked.push(JSON.parse(body) as Record<string, unknown>);
      if (mode === 'broken') {
        res.writeHead(500).end('oops');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify(mode === 'allow' ? { allow: true } : { allow: false, reason: 'not enrolled in program X' }),
      );
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => program.listen(port, '127.0.0.1', resolve));
  p = await startPlatform({ programServer: `http://127.0.0.1:${port}/authorize` });
  await partition(p, 'quality');
  clinic = await secretClient(p, 'clinic', 'system/*.cruds', { orgOid: ORG_OID, orgName: 'UMCG' });
  await grant(p, { partition: 'quality', client: 'clinic', scope: 'system/*.cruds' });
  await fhir(p, clinic, 'PUT', '/quality/Organization/umcg', {
    resourceType: 'Organization',
    id: 'umcg',
    name: 'UMCG',
    identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:oid:${ORG_OID}` }],
  });
  await ok(p.dataDir, 'import', PROPORTION.bundle, '--partition', 'quality');
});
after(async () => {
  await p.stop();
  program.close();
});

const [first, second] = patientsOf('proportion-boolean');
const submit = (pt: typeof first, requestId: string) =>
  fhir(
    p,
    clinic,
    'POST',
    `/quality/Measure/${PROPORTION.id}/$submit-data`,
    submission(PROPORTION.url, 'Organization/umcg', pt as NonNullable<typeof first>),
    {
      'x-request-id': requestId,
    },
  );
const events = async (requestId: string) =>
  (await p.store.audit.search({ requestId, limit: 50, offset: 0 })).events.map(
    (e) =>
      JSON.parse(e) as {
        subtype?: { code: string }[];
        outcome: string;
        outcomeDesc?: string;
        entity?: { what?: { reference?: string } }[];
      },
  );
const programEvent = async (requestId: string) =>
  (await events(requestId)).find((e) => e.subtype?.[0]?.code === 'program-authorization');

describe('program server handshake', () => {
  test('allowed: the program server hears who submits for whom; success is audited; data and a Provenance are stored', async () => {
    mode = 'allow';
    asked.length = 0;
    const r = await submit(first, 'program-allow');
    assert.equal(r.status, 200, r.text);
    assert.equal(asked.length, 1);
    const q = asked[0] as {
      client_id: string;
      client_organization: string;
      vault: string;
      measure: string;
      organization: { reference: string; identifier: { value: string }[] };
    };
    assert.equal(q.client_id, 'clinic');
    assert.equal(q.client_organization, ORG_OID);
    assert.equal(q.vault, 'quality');
    assert.equal(q.measure, PROPORTION.url);
    assert.equal(q.organization.reference, 'Organization/umcg');
    assert.deepEqual(
      q.organization.identifier.map((i) => i.value),
      [`urn:oid:${ORG_OID}`],
    );
    const e = await programEvent('program-allow');
    assert.equal(e?.outcome, '0');

    // No X-Provenance was sent: the server built one from the token, targeting every persisted resource.
    const echoed = JSON.parse(r.headers.get('x-provenance') as string) as {
      id: string;
      activity: { coding: { code: string }[] };
      reason: { coding: { code: string }[] }[];
      agent: { who: { identifier: { value: string } }; onBehalfOf: { identifier: { value: string } } }[];
      target: { reference: string }[];
    };
    assert.equal(echoed.activity.coding[0]?.code, 'CREATE');
    assert.equal(echoed.reason[0]?.coding[0]?.code, 'HQUALIMP');
    assert.equal(echoed.agent[0]?.who.identifier.value, 'clinic');
    assert.equal(echoed.agent[0]?.onBehalfOf.identifier.value, `urn:oid:${ORG_OID}`);
    const written = (r.json.entry as { response: { location: string } }[]).map((x) =>
      x.response.location.replace(/^.*\/quality\//, ''),
    );
    assert.deepEqual(echoed.target.map((t) => t.reference).sort(), [...written].sort());
    assert.equal(written.length, 1 + (first?.resources.length ?? 0));
    assert.equal((await fhir(p, clinic, 'GET', `/quality/Provenance/${echoed.id}`)).status, 200);
  });

  test('denied: 403 with the reason, a failure AuditEvent, nothing stored', async () => {
    mode = 'deny';
    const r = await submit(second, 'program-deny');
    assert.equal(r.status, 403);
    assert.match(r.text, /not enrolled in program X/);
    const e = await programEvent('program-deny');
    assert.equal(e?.outcome, '4');
    assert.match(String(e?.outcomeDesc), /not enrolled in program X/);
    assert.equal((await fhir(p, clinic, 'GET', `/quality/Patient/${second?.patient}`)).status, 404);
    assert.equal((await fhir(p, clinic, 'GET', `/quality/MeasureReport/dc-${second?.patient}`)).status, 404);
  });

  test('program server failing or unreachable: 503, audited, nothing stored', async () => {
    mode = 'broken';
    let r = await submit(second, 'program-broken');
    assert.equal(r.status, 503);
    assert.equal((await programEvent('program-broken'))?.outcome, '8');
    program.closeAllConnections();
    await new Promise<void>((resolve) => program.close(() => resolve()));
    r = await submit(second, 'program-down');
    assert.equal(r.status, 503);
    assert.match(r.text, /program server is unavailable/);
    assert.equal((await fhir(p, clinic, 'GET', `/quality/Patient/${second?.patient}`)).status, 404);
  });
});
