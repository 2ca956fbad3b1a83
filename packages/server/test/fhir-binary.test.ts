import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { FhirClient } from '@carevault/sdk';
import { Agent, setGlobalDispatcher } from 'undici';
import { auditEvents, type Caller, fhir, grantedClient, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// FHIR R4 Binary in its own format (binary.html#rest): created and updated from the bytes, read back as them.
let p: TestPlatform;
let writer: Caller;
let reader: Caller;
let auditor: Caller;
const PDF = Buffer.concat([Buffer.from('%PDF-1.4\n'), randomBytes(64 * 1024), Buffer.from([0xff, 0xfe, 0x00, 0x80])]);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function send(
  method: string,
  path: string,
  body: Buffer | string,
  headers: Record<string, string>,
  who = writer,
) {
  const res = await p.fetch(`${p.fhirBase}${path}`, {
    method,
    dispatcher: p.agent(),
    headers: { authorization: `Bearer ${who.token}`, ...headers },
    body,
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: text.startsWith('{') ? JSON.parse(text) : {} };
}
async function get(path: string, accept: string, who = reader) {
  const res = await p.fetch(`${p.fhirBase}${path}`, {
    dispatcher: p.agent(),
    headers: { authorization: `Bearer ${who.token}`, accept },
  });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}
const idOf = (location: string | null) => /\/Binary\/([^/]+)\/_history\//.exec(location ?? '')?.[1] as string;

before(async () => {
  p = await startPlatform();
  await partition(p, 'bin');
  await partition(p, 'bin_other');
  writer = await grantedClient(p, 'bin-writer', 'system/*.cruds', ['bin', 'bin_other']);
  reader = await grantedClient(p, 'bin-reader', 'system/Binary.rs', ['bin']);
  auditor = await secretClient(p, 'bin-auditor', 'system/AuditEvent.rs');
});
after(() => p.stop());

describe('Binary in its own format', () => {
  test('POST of a PDF: a Binary whose read in application/pdf gives the same bytes, and in FHIR the resource', async () => {
    const created = await send('POST', '/bin/Binary', PDF, { 'content-type': 'application/pdf' });
    assert.equal(created.status, 201, created.text);
    const id = idOf(created.headers.get('location'));
    assert.equal(created.json.resourceType, 'Binary');
    assert.equal(created.json.contentType, 'application/pdf');

    const pdf = await get(`/bin/Binary/${id}`, 'application/pdf');
    assert.equal(pdf.status, 200);
    assert.equal(pdf.headers.get('content-type'), 'application/pdf');
    assert.equal(sha(pdf.body), sha(PDF));

    const json = await get(`/bin/Binary/${id}`, 'application/fhir+json');
    const resource = JSON.parse(json.body.toString()) as { contentType: string; data: string; id: string };
    assert.equal(resource.id, id);
    assert.equal(sha(Buffer.from(resource.data, 'base64')), sha(PDF));
    // FHIR XML is the resource too, not a request for the bytes in XML.
    const xml = await get(`/bin/Binary/${id}`, 'application/fhir+xml');
    assert.equal(xml.status, 200);
    assert.ok(xml.body.subarray(0, 200).toString().includes('<Binary xmlns="http://hl7.org/fhir">'));
    // Another vault does not have it.
    assert.equal((await get(`/bin_other/Binary/${id}`, 'application/pdf', writer)).status, 404);
  });

  test('PUT creates under its id, then updates it; a media type keeps its parameters', async () => {
    const first = await send('PUT', '/bin/Binary/note-1', 'eerste versie — één', {
      'content-type': 'text/plain;charset=utf-8',
    });
    assert.equal(first.status, 201, first.text);
    assert.equal(first.json.contentType, 'text/plain; charset=utf-8');
    const second = await send('PUT', '/bin/Binary/note-1', 'tweede', { 'content-type': 'text/plain; charset=utf-8' });
    assert.equal(second.status, 200);
    assert.equal(second.json.meta.versionId, '2');
    const text = await get('/bin/Binary/note-1', 'text/plain');
    assert.equal(text.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(text.body.toString(), 'tweede');
    assert.equal(text.headers.get('x-content-type-options'), 'nosniff');
    // The first version is still there as it was.
    const v1 = await fhir(p, reader, 'GET', '/bin/Binary/note-1/_history/1');
    assert.equal(Buffer.from(String(v1.json.data), 'base64').toString(), 'eerste versie — één');
  });

  test('X-Security-Context becomes securityContext; an empty body a Binary without data', async () => {
    const withContext = await send('POST', '/bin/Binary', 'x', {
      'content-type': 'application/octet-stream',
      'x-security-context': 'Patient/p-1',
    });
    assert.equal(withContext.status, 201, withContext.text);
    assert.deepEqual(withContext.json.securityContext, { reference: 'Patient/p-1' });
    for (const bad of ['p-1', 'https://elsewhere.example/Patient/1', 'Patient/a b']) {
      const r = await send('POST', '/bin/Binary', 'x', { 'content-type': 'image/png', 'x-security-context': bad });
      assert.equal(r.status, 400, bad);
    }
    const empty = await send('POST', '/bin/Binary', '', { 'content-type': 'image/png' });
    assert.equal(empty.status, 201, empty.text);
    assert.equal(empty.json.data, undefined);
    const back = await get(`/bin/Binary/${idOf(empty.headers.get('location'))}`, 'image/png');
    assert.equal(back.status, 200);
    assert.equal(back.body.length, 0);
  });

  test('refused: another type, a media type that is none, more than 12 MiB, no create permission', async () => {
    const patient = await send('POST', '/bin/Patient', 'hello', { 'content-type': 'text/plain' });
    assert.equal(patient.status, 415);
    assert.match(patient.text, /Content-Type text\/plain is not supported/);
    const noType = await send('POST', '/bin/Binary', 'hello', { 'content-type': 'pdf' });
    assert.equal(noType.status, 415);
    const large = await send('POST', '/bin/Binary', Buffer.alloc(12 * 1024 * 1024 + 1), {
      'content-type': 'application/pdf',
    });
    assert.equal(large.status, 413);
    assert.match(large.text, /at most 12 MiB/);
    const exactly = await send('POST', '/bin/Binary', Buffer.alloc(12 * 1024 * 1024, 1), {
      'content-type': 'application/pdf',
    });
    assert.equal(exactly.status, 201, exactly.text);
    // Sent in chunks without a length: refused when the count passes the limit, and the server answers on.
    const chunk = Buffer.alloc(1024 * 1024, 2);
    const chunked = await p
      .fetch(`${p.fhirBase}/bin/Binary`, {
        method: 'POST',
        dispatcher: p.agent(),
        headers: { authorization: `Bearer ${writer.token}`, 'content-type': 'application/pdf' },
        body: (async function* () {
          for (let i = 0; i < 13; i++) yield chunk;
        })(),
        duplex: 'half',
      })
      .catch((err: Error) => err);
    assert.ok(!(chunked instanceof Error), String(chunked));
    assert.equal(chunked.status, 413);
    assert.equal((await get(`/bin/Binary/${idOf(exactly.headers.get('location'))}`, 'application/pdf')).status, 200);
    const readOnly = await send('POST', '/bin/Binary', 'x', { 'content-type': 'image/png' }, reader);
    assert.equal(readOnly.status, 403);
    // A JSON body is a Binary resource as before, not bytes.
    const asJson = await send(
      'POST',
      '/bin/Binary',
      JSON.stringify({ resourceType: 'Binary', contentType: 'text/plain', data: 'aGk=' }),
      {
        'content-type': 'application/fhir+json',
      },
    );
    assert.equal(asJson.status, 201);
    assert.equal(asJson.json.data, 'aGk=');
  });

  test('base64Binary has no 1 MB limit (R4 datatypes), a string has; a bad one is still refused', async () => {
    const big = randomBytes(2 * 1024 * 1024).toString('base64');
    const doc = (data: string, extra: Record<string, unknown> = {}) => ({
      resourceType: 'DocumentReference',
      status: 'current',
      content: [{ attachment: { contentType: 'application/pdf', data } }],
      ...extra,
    });
    const ok = await fhir(p, writer, 'POST', '/bin/DocumentReference', doc(big));
    assert.equal(ok.status, 201, ok.text.slice(0, 300));
    // Another problem is reported alone: not the size of the attachment as well.
    const other = await fhir(p, writer, 'POST', '/bin/DocumentReference', doc(big, { status: 'nonsense' }));
    assert.equal(other.status, 422);
    assert.doesNotMatch(other.text, /1 MB/);
    const unknown = await fhir(p, writer, 'POST', '/bin/DocumentReference', doc(big, { colour: 'red' }));
    assert.equal(unknown.status, 422);
    assert.match(unknown.text, /colour/);
    assert.doesNotMatch(unknown.text, /1 MB/);
    const notBase64 = await fhir(p, writer, 'POST', '/bin/DocumentReference', doc(`${big.slice(0, -4)}!!!!`));
    assert.equal(notBase64.status, 422);
    assert.match(notBase64.text, /Invalid base64Binary value/);
    assert.match(notBase64.text, /DocumentReference\.content\[0\]\.attachment\.data/);
    assert.doesNotMatch(notBase64.text, /1 MB/);
    const longString = await fhir(p, writer, 'POST', '/bin/Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      valueString: 'x'.repeat(1024 * 1024 + 1),
    });
    assert.equal(longString.status, 422);
    assert.match(longString.text, /larger than 1 MB/);
  });

  test('the SDK uploads a PDF as its bytes and reads the same bytes back', async () => {
    setGlobalDispatcher(new Agent({ connect: { ca: p.ca } }));
    const sdk = new FhirClient({ baseUrl: `${p.fhirBase}/bin`, tokens: { getToken: async () => writer.token } });
    const created = await sdk.uploadBinary(PDF, 'application/pdf');
    assert.equal(created.resourceType, 'Binary');
    const back = await sdk.binary(`Binary/${created.id}`, 'application/pdf');
    assert.equal(sha(Buffer.from(back.body)), sha(PDF));
    const put = await sdk.uploadBinary(Buffer.from('<p>letter</p>'), 'text/html', { id: 'letter-1' });
    assert.equal(put.id, 'letter-1');
    assert.equal(put.contentType, 'text/html');
    const html = await sdk.binary('Binary/letter-1', 'text/html');
    assert.equal(Buffer.from(html.body).toString(), '<p>letter</p>');
    // Stored content never runs as a page of the platform's origin.
    assert.equal(html.headers.get('content-security-policy'), "sandbox; default-src 'none'");
  });

  test('a raw create is audited as a create of the Binary', async () => {
    const created = await send('POST', '/bin/Binary', PDF, { 'content-type': 'application/pdf' });
    const id = idOf(created.headers.get('location'));
    const events = await auditEvents<{ subtype?: { code: string }[] }>(p, auditor, `entity=Binary/${id}`);
    assert.ok(
      events.some((e) => e.subtype?.some((s) => s.code === 'create')),
      JSON.stringify(events),
    );
  });
});
