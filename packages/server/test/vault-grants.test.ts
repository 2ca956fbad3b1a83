import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { grantAdd, grantList, grantRemove } from '../src/admin/vault.ts';
import { type Caller, fhir, partition, secretClient } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// `carevault grant add|remove|list` run as the operator does: through their own store connection, beside a
// running server that must follow the change on its next request.
let p: TestPlatform;
let clinic: Caller;

before(async () => {
  p = await startPlatform();
  await partition(p, 'grants_a');
  await partition(p, 'grants_b');
  clinic = await secretClient(p, 'clinic', 'system/*.rs');
});
after(() => p.stop());

const reads = async (vault: string) => (await fhir(p, clinic, 'GET', `/${vault}/Patient`)).status;

/**
 * The status a read comes to: a server follows another connection's commit within 0.1 s (SQLite, `PRAGMA
 * data_version`) or a NOTIFY's roundtrip (PostgreSQL), not at the same instant.
 */
async function settlesTo(vault: string, status: number): Promise<number> {
  const until = Date.now() + 3000;
  for (;;) {
    const now = await reads(vault);
    if (now === status || Date.now() > until) return now;
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('grant remove: the tokens already issued stop reaching that vault at once, others stay; audited', async () => {
  await grantAdd(p.config, { partition: 'grants_a', client: 'clinic', scope: 'system/*.rs' });
  await grantAdd(p.config, { partition: 'grants_b', client: 'clinic', scope: 'system/*.rs' });
  assert.equal(await settlesTo('grants_a', 200), 200);
  assert.equal(await settlesTo('grants_b', 200), 200);

  const removed = await grantRemove(p.config, { partition: 'grants_a', client: 'clinic' });
  assert.deepEqual(removed, { partition: 'grants_a', client: 'clinic', removed: true });
  assert.equal(await settlesTo('grants_a', 404), 404, 'the same token, the grant gone: as a vault it never had');
  assert.equal(await reads('grants_b'), 200, 'the other vault’s grant stays');
  assert.deepEqual(
    ((await grantList(p.config)) as { partition: string; client?: string }[])
      .filter((g) => g.client === 'clinic')
      .map((g) => g.partition),
    ['grants_b'],
  );

  await assert.rejects(
    grantRemove(p.config, { partition: 'grants_a', client: 'clinic' }),
    /no grant of client clinic on partition "grants_a"/,
  );
  await assert.rejects(
    grantRemove(p.config, { partition: 'grants_a', client: 'clinic', orgOid: '2.16.528.1' }),
    /exactly one of --client, --org-oid, --org-gln or --community/,
  );
  await assert.rejects(grantRemove(p.config, { partition: 'grants_a', orgGln: '12' }), /not 13 digits/);

  // Granted again, the same token reads again: nothing of the removal lingers in a cache.
  await grantAdd(p.config, { partition: 'grants_a', client: 'clinic', scope: 'system/Patient.rs' });
  assert.equal(await settlesTo('grants_a', 200), 200);

  const { events } = await p.store.audit.search({
    subtype: [
      'https://carevault.dev/fhir/CodeSystem/audit-subtype|grant-added',
      'https://carevault.dev/fhir/CodeSystem/audit-subtype|grant-removed',
    ],
    limit: 100,
    offset: 0,
  });
  const said = events.map((e) => (JSON.parse(e) as { outcomeDesc: string }).outcomeDesc).sort();
  assert.deepEqual(said, [
    'client clinic on grants_a: grant removed',
    'client clinic on grants_a: granted system/*.rs',
    'client clinic on grants_a: granted system/Patient.rs',
    'client clinic on grants_b: granted system/*.rs',
  ]);
});

test('grant remove by organization: every client of it loses the vault', async () => {
  await grantAdd(p.config, { partition: 'grants_b', orgOid: 'urn:oid:2.16.528.1.1007', scope: 'system/*.rs' });
  assert.ok(
    ((await grantList(p.config, 'grants_b')) as { org_oid?: string }[]).some((g) => g.org_oid === '2.16.528.1.1007'),
  );
  const removed = await grantRemove(p.config, { partition: 'grants_b', orgOid: '2.16.528.1.1007' });
  assert.deepEqual(removed, { partition: 'grants_b', org_oid: '2.16.528.1.1007', removed: true });
  assert.ok(!((await grantList(p.config, 'grants_b')) as { org_oid?: string }[]).some((g) => g.org_oid !== undefined));
});
