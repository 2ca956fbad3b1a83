import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { importCommand } from '../src/admin/import.ts';
import { fromXml, toXml } from '../src/fhir/xml.ts';
import { type Caller, fhir, grant, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// Issue 13 §4: FHIR XML for reads, searches and writes, converted faithfully by the `fhir` package, checked over
// every resource of the Synthea fixtures (fixtures/synthea, vendored from the shared test data).

const DATA = fileURLToPath(new URL('../../../fixtures/synthea/', import.meta.url));
const files = readdirSync(DATA)
  .filter((f) => f.endsWith('.json'))
  .map((f) => join(DATA, f));
type R = Record<string, unknown> & { resourceType: string; id: string; meta?: Record<string, unknown> };
const fixtureResources = files.flatMap((f) =>
  (JSON.parse(readFileSync(f, 'utf8')) as { entry: { resource: R }[] }).entry.map((e) => e.resource),
);
const XML = 'application/fhir+xml';
const withoutMeta = ({ meta: _meta, ...rest }: R) => rest;

describe('the converter: JSON → XML → JSON is the identity on every Synthea resource', () => {
  test(`all ${fixtureResources.length} resources round-trip exactly`, async () => {
    assert.ok(fixtureResources.length >= 1000);
    for (const resource of fixtureResources) {
      const back = await fromXml(await toXml(JSON.stringify(resource)));
      assert.deepEqual(back, resource, `${resource.resourceType}/${resource.id}`);
    }
  });
});

describe('FHIR XML over HTTP', () => {
  let p: TestPlatform;
  let caller: Caller;
  const stored = async () => {
    const r = await fhir(p, caller, 'GET', '/synthea/Patient?_summary=count');
    return r.json.total as number;
  };

  before(async () => {
    p = await startPlatform();
    await partition(p, 'synthea');
    caller = await secretClient(p, 'xml-client', 'system/*.cruds');
    await grant(p, { partition: 'synthea', client: 'xml-client', scope: 'system/*.cruds' });
    await importCommand(p.config, files, 'synthea');
  });
  after(() => p.stop());

  test('every stored resource read as XML and written back as XML is unchanged', async () => {
    const all = (await p.store.resources.scan('synthea', undefined, 5000)).map((r) => `${r.type}/${r.id}`);
    assert.equal(all.length, new Set(fixtureResources.map((r) => `${r.resourceType}/${r.id}`)).size);
    for (const ref of all) {
      const json = await fhir(p, caller, 'GET', `/synthea/${ref}`);
      const xml = await fhir(p, caller, 'GET', `/synthea/${ref}`, undefined, { accept: XML });
      assert.equal(xml.status, 200, ref);
      assert.equal(xml.headers.get('content-type'), 'application/fhir+xml; charset=utf-8');
      assert.equal(xml.headers.get('etag'), json.headers.get('etag'));
      const put = await fhir(p, caller, 'PUT', `/synthea/${ref}`, xml.text, {
        'content-type': XML,
        prefer: 'return=representation',
      });
      assert.equal(put.status, 200, `${ref}: ${put.text.slice(0, 300)}`);
      assert.deepEqual(withoutMeta(put.json as R), withoutMeta(json.json as R), ref);
      const version = (r: { json: Record<string, unknown> }) =>
        Number((r.json.meta as { versionId: string }).versionId);
      assert.equal(version(put), version(json) + 1, `${ref}: a new version`);
    }
  });

  test('search answers as XML: Patient?name= and Patient/<id> with Accept: application/fhir+xml', async () => {
    const patient = fixtureResources.find((r) => r.resourceType === 'Patient') as R & { name: { family: string }[] };
    const family = patient.name[0]?.family as string;
    const search = await fhir(p, caller, 'GET', `/synthea/Patient?name=${encodeURIComponent(family)}`, undefined, {
      accept: XML,
    });
    assert.equal(search.status, 200);
    assert.match(search.text, /^(<\?xml[^>]*\?>)?<Bundle xmlns="http:\/\/hl7.org\/fhir">/);
    const bundle = (await fromXml(search.text)) as { type: string; entry: { resource: R }[] };
    assert.equal(bundle.type, 'searchset');
    assert.deepEqual(
      bundle.entry.map((e) => e.resource.id),
      [patient.id],
    );
    const viaFormat = await fhir(p, caller, 'GET', `/synthea/Patient/${patient.id}?_format=xml`);
    assert.equal(((await fromXml(viaFormat.text)) as R).id, patient.id);
  });

  test('a resource created from XML is stored as the same resource', async () => {
    const body =
      '<?xml version="1.0" encoding="UTF-8"?><Patient xmlns="http://hl7.org/fhir"><active value="true"/>' +
      '<name><family value="Ng"/><given value="Ana"/></name><gender value="female"/>' +
      '<birthDate value="1990-02-03"><extension url="http://example.org/precision"><valueString value="day"/></extension></birthDate></Patient>';
    const created = await fhir(p, caller, 'POST', '/synthea/Patient', body, { 'content-type': XML });
    assert.equal(created.status, 201, created.text);
    const read = await fhir(p, caller, 'GET', `/synthea/Patient/${created.json.id}`);
    assert.deepEqual(withoutMeta(read.json as R), {
      resourceType: 'Patient',
      id: created.json.id,
      active: true,
      name: [{ family: 'Ng', given: ['Ana'] }],
      gender: 'female',
      birthDate: '1990-02-03',
      _birthDate: { extension: [{ url: 'http://example.org/precision', valueString: 'day' }] },
    });
  });

  test('a transaction Bundle posted as XML is answered in XML; a decimal keeps its value', async () => {
    const bundle =
      '<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/><entry><fullUrl value="urn:uuid:5f0c2a57-1111-4c1b-9b7e-2f0c2a571111"/>' +
      '<resource><Observation><status value="final"/><code><text value="weight"/></code>' +
      '<valueQuantity><value value="72.50"/><unit value="kg"/></valueQuantity></Observation></resource>' +
      '<request><method value="POST"/><url value="Observation"/></request></entry></Bundle>';
    const r = await fhir(p, caller, 'POST', '/synthea', bundle, { 'content-type': XML, accept: XML });
    assert.equal(r.status, 200, r.text);
    const answer = (await fromXml(r.text)) as {
      type: string;
      entry: { response: { status: string; location: string } }[];
    };
    assert.equal(answer.type, 'transaction-response');
    assert.match(answer.entry[0]?.response.status ?? '', /^201/);
    const location = answer.entry[0]?.response.location.split('/_history')[0] as string;
    const stored = await fhir(p, caller, 'GET', `/synthea/${location.replace(/^.*\/synthea\//, '')}`);
    assert.equal((stored.json.valueQuantity as { value: number }).value, 72.5);
  });

  test('hostile or non-FHIR XML is refused with the reason, and nothing is stored', async () => {
    const before = await stored();
    const patient = (inner: string) => `<Patient xmlns="http://hl7.org/fhir">${inner}</Patient>`;
    const cases: [string, string, RegExp][] = [
      [
        'external entity (XXE)',
        `<?xml version="1.0"?><!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>${patient('<id value="&xxe;"/>')}`,
        /DTD/,
      ],
      [
        'entity expansion (billion laughs)',
        `<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>${patient('<gender value="&b;"/>')}`,
        /DTD/,
      ],
      ['undeclared entity', patient('<gender value="&ent;"/>'), /not FHIR XML/],
      ['not XML', 'Patient: yes', /not FHIR XML/],
      ['not FHIR', '<html><body>hi</body></html>', /FHIR namespace/],
      ['another namespace', '<Patient xmlns="urn:example"><active value="true"/></Patient>', /FHIR namespace/],
      ['unknown resource type', '<Pateint xmlns="http://hl7.org/fhir"/>', /not FHIR R4 XML/],
      ['unknown element', patient('<active value="true"/><nickname value="x"/>'), /\/Patient\/nickname is unknown/],
      ['wrong value type', patient('<active value="perhaps"/>'), /boolean/],
      ['truncated', '<Patient xmlns="http://hl7.org/fhir"><active value="true"/>', /not FHIR XML/],
      ['text outside values', patient('<active value="true"/>hello'), /outside an element value/],
      ['processing instruction', `<?php echo 1 ?>${patient('')}`, /processing instruction/],
    ];
    for (const [name, body, reason] of cases) {
      const r = await fhir(p, caller, 'POST', '/synthea/Patient', body, { 'content-type': XML });
      assert.equal(r.status, 400, `${name}: ${r.status} ${r.text}`);
      assert.equal(r.json.resourceType, 'OperationOutcome', name);
      assert.match(r.text, reason, name);
      assert.doesNotMatch(r.text, /root:/, `${name}: no file content leaks`);
    }
    assert.equal(await stored(), before);
  });
});
