import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Caller, fhir, grantedClient, partition } from './helpers/fhir.ts';
import { startPlatform, type TestPlatform } from './helpers/platform.ts';

// `_list` (search.html#list): the resources a List of the same vault holds, as the caller may read them.
let p: TestPlatform;
let writer: Caller;

const list = (id: string, ...entry: Record<string, unknown>[]) => ({
  resourceType: 'List',
  id,
  status: 'current',
  // lst-2: only a list of changes may mark an entry deleted.
  mode: entry.some((e) => e.deleted) ? 'changes' : 'working',
  entry,
});
const item = (reference: string, more: Record<string, unknown> = {}) => ({ item: { reference }, ...more });

async function put(resource: Record<string, unknown>, vault = 'ls') {
  const r = await fhir(p, writer, 'PUT', `/${vault}/${resource.resourceType}/${resource.id}`, resource);
  assert.ok(r.status === 200 || r.status === 201, r.text);
}

async function search(query: string, caller = writer) {
  const r = await fhir(p, caller, 'GET', `/ls/${query}`);
  assert.equal(r.status, 200, `${query} → ${r.text}`);
  return r.json as {
    total?: number;
    entry?: { resource: { resourceType: string; id: string }; search: { mode: string } }[];
  };
}

async function ids(query: string, caller = writer): Promise<string[]> {
  return ((await search(query, caller)).entry ?? [])
    .filter((e) => e.search.mode === 'match')
    .map((e) => e.resource.id)
    .sort();
}

async function refused(query: string, status: number, message: RegExp, caller = writer) {
  const r = await fhir(p, caller, 'GET', `/ls/${query}`);
  assert.equal(r.status, status, `${query} → ${r.text}`);
  assert.match(r.text, message, query);
}

before(async () => {
  p = await startPlatform();
  await partition(p, 'ls');
  await partition(p, 'elsewhere');
  writer = await grantedClient(p, 'ls-writer', 'system/*.cruds', ['ls', 'elsewhere']);
  for (const [id, gender] of [
    ['p1', 'male'],
    ['p2', 'female'],
    ['p3', 'female'],
    ['p4', 'male'],
  ]) {
    await put({ resourceType: 'Patient', id, gender });
  }
  for (const id of ['o1', 'o2']) {
    await put({
      resourceType: 'Observation',
      id,
      status: 'final',
      code: { text: 'x' },
      subject: { reference: 'Patient/p1' },
    });
  }
  const base = `${p.issuer}/fhir/ls`;
  await put(
    list(
      'ward',
      item('Patient/p1'),
      item('Patient/p2'),
      item(`${base}/Patient/p3`),
      item('Patient/p4', { deleted: true }),
      item('Observation/o1'),
      item('Patient/not-there'),
      item('https://elsewhere.example/fhir/Patient/p2'),
      { item: { identifier: { value: 'p4' } } },
    ),
  );
  await put(list('round', item('Patient/p2'), item('Patient/p4')));
  await put(list('observations', item('Observation/o2')));
  await put(list('other', item('Patient/p1')), 'elsewhere');
});
after(() => p.stop());

describe('_list', () => {
  test("the List's current members of the searched type, by id or List/id; with other parameters and includes", async () => {
    assert.deepEqual(await ids('Patient?_list=ward'), ['p1', 'p2', 'p3']);
    assert.deepEqual(await ids('Patient?_list=List/ward'), ['p1', 'p2', 'p3']);
    assert.deepEqual(await ids('Observation?_list=ward'), ['o1']);
    assert.deepEqual(await ids('Patient?_list=ward&gender=female'), ['p2', 'p3']);
    // Several values: any of the Lists; several parameters: all of them.
    assert.deepEqual(await ids('Patient?_list=ward,round'), ['p1', 'p2', 'p3', 'p4']);
    assert.deepEqual(await ids('Patient?_list=ward&_list=round'), ['p2']);
    // A List without members of the type matches nothing, and says so with a total.
    const none = await search('Patient?_list=observations&_total=accurate');
    assert.deepEqual([none.total, none.entry], [0, undefined]);
    assert.equal((await search('Patient?_list=ward&_total=accurate')).total, 3);
    const included = await search('Observation?_list=ward&_include=Observation:subject');
    assert.deepEqual(
      (included.entry ?? []).map((e) => `${e.search.mode} ${e.resource.resourceType}/${e.resource.id}`).sort(),
      ['include Patient/p1', 'match Observation/o1'],
    );
    // The List as it is now: a member taken out is no longer found.
    await put(list('round', item('Patient/p4')));
    assert.deepEqual(await ids('Patient?_list=round'), ['p4']);
  });

  test('refused with a reason: no such List here, a functional list, a bad id, a modifier, not at the top, too many', async () => {
    await refused('Patient?_list=nope', 400, /no List nope in this vault/);
    // Another vault's List is not found either.
    await refused('Patient?_list=other', 400, /no List other in this vault/);
    await refused('Patient?_list=$current-problems', 400, /functional lists are not kept/);
    await refused(`Patient?_list=${encodeURIComponent('bad id!')}`, 400, /not the id of a List/);
    await refused('Patient?_list:not=ward', 400, /_list takes no modifier/);
    await refused('Observation?subject._list=ward', 400, /_list is answered at the top of a search only/);
    const conditional = await fhir(
      p,
      writer,
      'POST',
      '/ls/Patient',
      { resourceType: 'Patient' },
      {
        'if-none-exist': '_list=ward',
      },
    );
    assert.equal(conditional.status, 400, conditional.text);
    assert.match(conditional.text, /_list is answered at the top of a search only/);
    await put(list('crowd', ...Array.from({ length: 1001 }, (_, i) => item(`Patient/c${i}`))));
    await refused('Patient?_list=crowd', 400, /_list takes up to 1000 entries in one search/);
  });

  test('the List is read as the caller: without List read it is 403', async () => {
    const patientsOnly = await grantedClient(p, 'ls-patients', 'system/Patient.rs', ['ls']);
    assert.deepEqual(await ids('Patient?gender=female', patientsOnly), ['p2', 'p3']);
    await refused('Patient?_list=ward', 403, /_list reads List resources/, patientsOnly);
    const withLists = await grantedClient(p, 'ls-lists', 'system/Patient.rs system/List.rs', ['ls']);
    assert.deepEqual(await ids('Patient?_list=ward', withLists), ['p1', 'p2', 'p3']);
  });
});
