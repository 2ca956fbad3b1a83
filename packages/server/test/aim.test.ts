import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { addAccount } from '../src/vault/partitions.ts';
import { type Caller, grant, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// Issue 5 §1 (seed 000, standards §K): MPI id → account URN through CARA's AIM API and IHE PIXm $ihe-pix.

const OID = '1.1.1.99.1';
const MPI = `urn:cara:mpi_id:${OID}/e2d9dbec-9f49-4944-8b6b-790e88d2bd0f`;
const SECOND = 'urn:cara:mpi_id:2.16.756.5.30.1.191.1.0.2.1/2f4acc4e-8ddb-41aa-850b-bc361f75f107';
const ACCOUNT = 'urn:cara:account:19776259-4d3e-4a1d-85e3-f1c6e48ec7f1';
const OTHER_MPI = `urn:cara:mpi_id:${OID}/aaaaaaaa-0000-4000-8000-000000000001`;

let p: TestPlatform;
let tcu: Caller;
let noScope: Caller;
let outsider: Caller;

before(async () => {
  p = await startPlatform();
  const { partition } = await addAccount(p.store, { accountUrn: ACCOUNT, mpiIds: [MPI, SECOND] });
  await addAccount(p.store, { accountUrn: 'urn:cara:account:someone-else', mpiIds: [OTHER_MPI] });
  tcu = await secretClient(p, 'tcu-bestclinic', 'ns:cara:authx.Reader ns:cara:scp.Contributor system/*.rs');
  await grant(p, { partition, client: 'tcu-bestclinic', scope: 'system/*.rs' });
  noScope = await secretClient(p, 'no-aim-scope', 'system/*.rs');
  await grant(p, { partition, client: 'no-aim-scope', scope: 'system/*.rs' });
  outsider = await secretClient(p, 'outsider', 'ITI-83');
});
after(() => p.stop());

async function aim(caller: Caller | undefined, body: unknown) {
  const res = await p.fetch(`${p.base}/aim/api/v1/query/get-account-urn-from-mpi-id-urn`, {
    method: 'POST',
    dispatcher: p.agent(),
    headers: { ...(caller ? { authorization: `Bearer ${caller.token}` } : {}), 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function pix(caller: Caller, query: string) {
  const res = await p.fetch(`${p.base}/aim/Patient/$ihe-pix?${query}`, {
    dispatcher: p.agent(),
    headers: { authorization: `Bearer ${caller.token}` },
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

const issue = (json: Record<string, unknown>) => (json.issue as { code: string; diagnostics: string }[])[0];

describe('CARA AIM: get-account-urn-from-mpi-id-urn', () => {
  test('found → 200 {accountUrn}, exactly as CARA documents it', async () => {
    const r = await aim(tcu, { mpiIdUrn: MPI });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { accountUrn: ACCOUNT });
  });

  test('unknown id, an account the caller may not reach, malformed input, no token, no AIM scope', async () => {
    assert.equal(
      (await aim(tcu, { mpiIdUrn: `urn:cara:mpi_id:${OID}/00000000-0000-4000-8000-000000000000` })).status,
      404,
    );
    const foreign = await aim(tcu, { mpiIdUrn: OTHER_MPI });
    assert.equal(foreign.status, 404, 'an account the caller has no grant on is not disclosed');
    assert.equal(foreign.json.message, 'no account for this MPI id');
    assert.equal((await aim(outsider, { mpiIdUrn: MPI })).status, 404);
    assert.equal((await aim(tcu, { mpiIdUrn: 'urn:cara:account:x' })).status, 400);
    assert.equal((await aim(tcu, { wrong: 1 })).status, 400);
    assert.equal((await aim(tcu, '{not json')).status, 400);
    assert.equal((await aim(undefined, { mpiIdUrn: MPI })).status, 401);
    assert.equal((await aim(noScope, { mpiIdUrn: MPI })).status, 403);
  });
});

describe('PIXm $ihe-pix (ITI-83, K01–K08)', () => {
  const source = `sourceIdentifier=${encodeURIComponent(`urn:oid:${OID}|e2d9dbec-9f49-4944-8b6b-790e88d2bd0f`)}`;

  test('K01 K02: the account URN and the other MPI ids; targetSystem narrows', async () => {
    const all = await pix(tcu, source);
    assert.equal(all.status, 200);
    assert.equal(all.json.resourceType, 'Parameters');
    const ids = (all.json.parameter as { name: string; valueIdentifier: { system: string; value: string } }[]).map(
      (x) => x.valueIdentifier,
    );
    assert.deepEqual(ids, [
      { system: 'urn:ietf:rfc:3986', value: ACCOUNT },
      { system: 'urn:oid:2.16.756.5.30.1.191.1.0.2.1', value: '2f4acc4e-8ddb-41aa-850b-bc361f75f107' },
    ]);
    const narrowed = await pix(tcu, `${source}&targetSystem=urn:ietf:rfc:3986`);
    assert.deepEqual(narrowed.json.parameter, [
      { name: 'targetIdentifier', valueIdentifier: { system: 'urn:ietf:rfc:3986', value: ACCOUNT } },
    ]);
  });

  test('K03 K04 K05 K06 K08: unknown id 404, unknown domain 400, unknown targetSystem 403, bad parameters 400, scope 403', async () => {
    const unknownId = await pix(
      tcu,
      `sourceIdentifier=${encodeURIComponent(`urn:oid:${OID}|00000000-0000-4000-8000-000000000000`)}`,
    );
    assert.equal(unknownId.status, 404);
    assert.equal(issue(unknownId.json)?.code, 'not-found');
    assert.equal(issue(unknownId.json)?.diagnostics, 'sourceIdentifier Patient Identifier not found');
    const unknownDomain = await pix(
      tcu,
      `sourceIdentifier=${encodeURIComponent('urn:oid:9.9.9|e2d9dbec-9f49-4944-8b6b-790e88d2bd0f')}`,
    );
    assert.equal(unknownDomain.status, 400);
    assert.equal(issue(unknownDomain.json)?.code, 'code-invalid');
    const target = await pix(tcu, `${source}&targetSystem=urn:oid:9.9.9`);
    assert.equal(target.status, 403);
    assert.equal(issue(target.json)?.diagnostics, 'targetSystem not found');
    assert.equal((await pix(tcu, '')).status, 400);
    assert.equal((await pix(tcu, `${source}&${source}`)).status, 400);
    assert.equal((await pix(noScope, source)).status, 403);
  });

  test('every lookup is audited (Query, ITI-83) with its outcome', async () => {
    const { events } = await p.store.audit.search({
      agent: ['tcu-bestclinic'],
      subtype: ['urn:ihe:event-type-code|ITI-83'],
      limit: 100,
      offset: 0,
    });
    const parsed = events.map((e) => JSON.parse(e) as { outcome: string; type: { code: string } });
    assert.ok(parsed.length >= 8);
    assert.ok(parsed.every((e) => e.type.code === '110112'));
    assert.ok(parsed.some((e) => e.outcome === '0') && parsed.some((e) => e.outcome === '4'));
  });
});
