import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  aggregatePatient,
  aortaId,
  BSN_SYSTEM,
  bgzFromPlanDefinition,
  ConfigurationError,
  checkProfessional,
  DEFAULT_BGZ,
  ENDPOINT_EXT,
  type FhirClient,
  isValidBsn,
  type SourceCall,
  SourceConnector,
} from '../src/index.ts';
import type { ClosableFetch } from '../src/node.ts';
import { type Cara, CLIENT_ID, caraVaultClient, startCara } from './helpers/cara.ts';

// The pure rules of the Zorgviewer aggregator, and what it does with a source's failing search; the whole
// exchange (viewer hub, user context, consent) runs against real servers in packages/server/test/zorgviewer.test.ts.
describe('Zorgviewer rules (seed 001)', () => {
  test('BSN: nine digits passing the 11-test', () => {
    for (const bsn of ['000004881', '999911120', '111222333']) assert.equal(isValidBsn(bsn), true, bsn);
    for (const bsn of ['123456789', '000000000', '00004881', '0000048810', '00000488a', ' 00004881'])
      assert.equal(isValidBsn(bsn), false, bsn);
  });

  test('AORTA-ID carries the seed example and is left out beyond 128 characters', () => {
    const p = { id: 'larts', role: '62247001', organizationOid: 'urn:oid:2.16.528.1.1007.3.3.15123' };
    assert.equal(
      aortaId('1b9d6bCd-bBf', 'yA8UM8fHmhde', p),
      'rid:1b9d6bCd-bBf;cid:yA8UM8fHmhde;usr:larts;rol:62247001;org:2.16.528.1.1007.3.3.15123',
    );
    assert.equal(aortaId('1b9d6bCd-bBf', 'yA8UM8fHmhde', { ...p, id: 'x'.repeat(60) }), undefined);
  });

  test('a professional whose fields cannot travel in headers is refused', () => {
    const p = { id: '177578', role: '62247001', organizationOid: '2.16.528.1.1007.3.3.15123' };
    assert.deepEqual(checkProfessional(p), p);
    assert.throws(() => checkProfessional({ ...p, id: 'a;rol:admin' }), ConfigurationError);
    assert.throws(() => checkProfessional({ ...p, id: 'ärts' }), ConfigurationError);
    assert.throws(() => checkProfessional({ ...p, organizationOid: 'UMCG' }), ConfigurationError);
  });

  test('PlanDefinition BgZ2017: each output is one search, each code filter one OR-ed parameter', () => {
    const plan = {
      resourceType: 'PlanDefinition',
      action: [
        {
          output: [
            { type: 'Patient' },
            {
              type: 'Condition',
              codeFilter: [{ path: 'clinical-status', code: [{ code: 'active' }, { code: 'resolved' }] }],
            },
          ],
          action: [
            {
              output: [
                {
                  type: 'Observation',
                  codeFilter: [{ path: 'code', code: [{ system: 'http://snomed.info/sct', code: '228366006' }] }],
                },
                { type: 'bad type!' },
              ],
            },
          ],
        },
      ],
    };
    assert.deepEqual(bgzFromPlanDefinition(plan), [
      { type: 'Condition', params: [['clinical-status', 'active,resolved']] },
      { type: 'Observation', params: [['code', 'http://snomed.info/sct|228366006']] },
    ]);
    assert.deepEqual(
      DEFAULT_BGZ.map((q) => q.type),
      ['Condition', 'Procedure', 'Observation', 'AllergyIntolerance', 'Flag', 'DocumentReference', 'Consent'],
    );
  });
});

describe('a source whose search fails (real carevault behind the fault proxy)', () => {
  let cara: Cara;
  let fetch: ClosableFetch;
  let client: FhirClient;
  const BSN = '999911120';

  /** Opens the CARA platform as the source with its mTLS client; the user-context part is tested elsewhere. */
  class DirectConnector extends SourceConnector {
    override open(): SourceCall {
      return { client, requestIds: [] };
    }
  }

  before(async () => {
    cara = await startCara();
    ({ fetch, client } = caraVaultClient(cara));
    const vital = 'http://terminology.hl7.org/CodeSystem/observation-category';
    await client.transaction([
      {
        fullUrl: 'urn:uuid:org',
        resource: {
          resourceType: 'Organization',
          name: 'Bron',
          identifier: [{ value: 'urn:oid:2.16.840.1.113883.2.4.3.8' }],
        },
        request: { method: 'POST', url: 'Organization' },
      },
      {
        resource: {
          resourceType: 'Endpoint',
          status: 'active',
          connectionType: {
            system: 'http://terminology.hl7.org/CodeSystem/endpoint-connection-type',
            code: 'hl7-fhir-rest',
          },
          payloadType: [{ text: 'BgZ' }],
          managingOrganization: { reference: 'urn:uuid:org' },
          address: `${cara.issuer}/fhir/alice_1234`,
          extension: [{ url: ENDPOINT_EXT.clientId, valueString: CLIENT_ID }],
        } as never,
        request: { method: 'POST', url: 'Endpoint' },
      },
      {
        fullUrl: 'urn:uuid:pat',
        resource: { resourceType: 'Patient', identifier: [{ system: BSN_SYSTEM, value: BSN }] } as never,
        request: { method: 'POST', url: 'Patient' },
      },
      // Three pages of vital signs at the server's default page size of 50.
      ...Array.from({ length: 120 }, (_, i) => ({
        resource: {
          resourceType: 'Observation',
          status: 'final',
          category: [{ coding: [{ system: vital, code: 'vital-signs' }] }],
          code: { text: `measurement ${i}` },
          subject: { reference: 'urn:uuid:pat' },
        } as never,
        request: { method: 'POST' as const, url: 'Observation' },
      })),
    ]);
  });

  after(async () => {
    cara.proxy.fault = () => ({ kind: 'pass' });
    await fetch?.close();
    await cara?.stop();
  });

  test("one failed search ends the source's query: its other searches stop paging", async () => {
    const observations = () => cara.proxy.seen.filter((r) => r.url.includes('/Observation')).length;
    // The Condition search is refused after 300 ms; by then the Observation search has its first page of three,
    // and each further page takes 500 ms to arrive.
    let pages = 0;
    cara.proxy.fault = (req) =>
      req.url.includes('/Condition')
        ? { kind: 'status', status: 400, afterMs: 300 }
        : req.url.includes('/Observation') && pages++ > 0
          ? { kind: 'delay', ms: 500 }
          : { kind: 'pass' };
    const professional = { id: '177578', role: '62247001', organizationOid: '2.16.528.1.1007.3.3.15123' };
    const started = Date.now();
    const result = await aggregatePatient({
      bsn: BSN,
      professional,
      directory: client,
      connector: new DirectConnector({ signer: {} as never }),
    });
    assert.equal(result.sources.length, 1);
    assert.deepEqual(
      { status: result.sources[0]?.status, http: result.sources[0]?.http, count: result.sources[0]?.count },
      { status: 'error', http: 400, count: 0 },
    );
    assert.deepEqual(result.resources, []);
    assert.ok(Date.now() - started < 800, 'the failure is the answer, without waiting for the slow search');
    const asked = observations();
    assert.ok(asked >= 1, 'the Observation search was under way when the Condition search failed');
    // Left running, the Observation search would go on asking for its next page every 500 ms.
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal(observations(), asked, 'no Observation page was asked for after the query ended');
  });
});
