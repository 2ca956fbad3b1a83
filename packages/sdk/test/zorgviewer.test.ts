import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  aortaId,
  bgzFromPlanDefinition,
  ConfigurationError,
  checkProfessional,
  DEFAULT_BGZ,
  isValidBsn,
} from '../src/index.ts';

// The pure rules of the Zorgviewer aggregator; the whole exchange runs against real servers in
// packages/server/test/zorgviewer.test.ts.
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
