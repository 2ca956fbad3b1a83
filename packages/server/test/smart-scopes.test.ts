import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { grantableScopes } from '../src/auth/clients.ts';
import { isCovered, parseSmartScope } from '../src/auth/smart-scopes.ts';

// SMART scope grammar and the "covered by a registered scope" rule used at the token endpoint.
describe('parseSmartScope', () => {
  test('v1 scopes map to v2 permissions', () => {
    assert.deepEqual([...(parseSmartScope('system/Observation.read')?.permissions ?? [])], ['r', 's']);
    assert.deepEqual([...(parseSmartScope('patient/*.write')?.permissions ?? [])], ['c', 'u', 'd']);
    assert.deepEqual([...(parseSmartScope('user/Patient.*')?.permissions ?? [])].sort(), ['c', 'd', 'r', 's', 'u']);
  });

  test('v2 scopes with granular queries', () => {
    const s = parseSmartScope(
      'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory',
    );
    assert.equal(s?.version, 2);
    assert.equal(s?.query, 'category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory');
  });

  test('malformed scopes are rejected (B17)', () => {
    for (const bad of [
      'system/Observation.dus',
      'system/Observation.rr',
      'system/Observation.',
      'system/observation.rs',
      'system/Observation.read?category=x',
      'admin/Patient.rs',
      'system/Observation.rs?=x',
      'system/Observation.constructor',
      'system/Observation.__proto__',
    ]) {
      assert.equal(parseSmartScope(bad), undefined, bad);
    }
  });
});

describe('isCovered', () => {
  test('a wildcard grant covers narrower requests of the same context', () => {
    assert.ok(isCovered('system/Observation.rs', ['system/*.rs']));
    assert.ok(isCovered('system/Observation.read', ['system/*.rs']));
    assert.ok(isCovered('system/Observation.r', ['system/*.read']));
    assert.ok(!isCovered('system/Observation.cruds', ['system/*.rs']));
    assert.ok(!isCovered('patient/Observation.rs', ['system/*.rs']));
    assert.ok(!isCovered('system/Observation.rs', ['system/Patient.rs']));
  });

  test('granular grants cover only the same granular request', () => {
    const lab = 'system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
    assert.ok(isCovered(lab, ['system/Observation.rs']));
    assert.ok(isCovered(lab, [lab]));
    assert.ok(!isCovered('system/Observation.rs', [lab]));
  });

  test('non-SMART scopes must match exactly', () => {
    assert.ok(isCovered('ns:cara:scp.Contributor', ['ns:cara:scp.Contributor']));
    assert.ok(!isCovered('ns:cara:scp.Admin', ['ns:cara:scp.Contributor']));
  });
});

describe('grantableScopes', () => {
  const policy = {
    scopes: ['system/*.rs', 'ns:cara:scp.Contributor'],
    tokenFormat: 'jwt' as const,
    tokenAlg: 'ES256' as const,
  };
  test('no scope requested → all registered scopes', () => {
    assert.deepEqual(grantableScopes(undefined, policy), { granted: policy.scopes, refused: [] });
  });
  test('duplicates collapse; uncovered scopes are reported', () => {
    assert.deepEqual(grantableScopes('system/Patient.rs system/Patient.rs system/Patient.c', policy), {
      granted: ['system/Patient.rs'],
      refused: ['system/Patient.c'],
    });
  });
});
