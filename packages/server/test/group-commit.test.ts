// The store's group commit: transactions requested together share one database transaction, yet each stays
// atomic and isolated — a refused or failing one leaves no trace, the others commit, the audit chain holds.
// Store-level (on the store this run uses), because over HTTP which requests share a group is up to timing.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { auditRecord, EVENT } from '../src/audit/balp.ts';
import { openStore } from '../src/store/index.ts';
import type { ResourceTransaction, ResourceWrite, Store } from '../src/store/types.ts';
import { addPartition } from '../src/vault/partitions.ts';
import { postgresUrlFor, TEST_STORE } from './helpers/store.ts';

const NO_INDEX: ResourceWrite['index'] = {
  token: [],
  string: [],
  reference: [],
  date: [],
  number: [],
  quantity: [],
  uri: [],
  composite: [],
};

function patient(id: string, version = 1, method: string = version === 1 ? 'POST' : 'PUT'): ResourceWrite {
  return {
    type: 'Patient',
    id,
    version,
    lastUpdated: new Date().toISOString(),
    method: method as ResourceWrite['method'],
    content: JSON.stringify({ resourceType: 'Patient', id, meta: { versionId: String(version) } }),
    index: { ...NO_INDEX, token: [{ param: '_id', system: null, code: id, text: null }] } as ResourceWrite['index'],
  };
}

const event = (partition: string, object: string) =>
  auditRecord({
    type: EVENT.rest,
    subtype: EVENT.rest_('create'),
    action: 'C',
    outcome: '0',
    who: { clientId: 'group-commit-test' },
    clientRole: '110153',
    partition,
    objects: [object],
    observer: 'https://localhost',
  });

describe(`group commit (${TEST_STORE})`, () => {
  let dataDir: string;
  let store: Store;

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'carevault-group-'));
    store = await openStore({ dataDir, databaseUrl: TEST_STORE === 'postgres' ? postgresUrlFor(dataDir) : undefined });
    await addPartition(store, 'vault_a');
    await addPartition(store, 'vault_b');
  });
  after(async () => {
    await store.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  /** Requests all transactions in one turn of the event loop, so that they share a group; settles them all. */
  const together = (jobs: [string, (tx: ResourceTransaction) => Promise<unknown>][]) =>
    Promise.allSettled(jobs.map(([partition, fn]) => store.resources.transaction(partition, fn)));

  const content = async (partition: string, id: string) =>
    (await store.resources.current(partition, 'Patient', id))?.content;

  async function eventsAbout(object: string): Promise<number> {
    const found = await store.audit.search({ entity: [`Patient/${object}`], limit: 10, offset: 0 });
    return Number(found.total);
  }

  test('a write the database refuses fails only its own transaction; the others and their events commit', async () => {
    const outcomes = await together([
      [
        'vault_a',
        async (tx) => {
          await tx.write(patient('r1'));
          await tx.audit(event('vault_a', 'Patient/r1'));
        },
      ],
      [
        'vault_a',
        async (tx) => {
          await tx.write(patient('r2'));
          await tx.write(patient('r3', 1, 'GET')); // CHECK (method IN …) refuses this row
          await tx.audit(event('vault_a', 'Patient/r3'));
        },
      ],
      [
        'vault_a',
        async (tx) => {
          await tx.write(patient('r4'));
          await tx.audit(event('vault_a', 'Patient/r4'));
        },
      ],
    ]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.ok(await content('vault_a', 'r1'));
    assert.equal(await content('vault_a', 'r2'), undefined, 'the refused transaction left a write behind');
    assert.equal(await content('vault_a', 'r3'), undefined);
    assert.ok(await content('vault_a', 'r4'));
    assert.deepEqual([await eventsAbout('r1'), await eventsAbout('r3'), await eventsAbout('r4')], [1, 0, 1]);
    assert.equal((await store.audit.verify()).ok, true);
  });

  test('a refused write in one vault does not disturb the next transaction of that vault', async () => {
    const outcomes = await together([
      ['vault_b', (tx) => tx.audit(event('vault_b', 'Patient/w0'))],
      ['vault_a', (tx) => tx.write(patient('w1', 1, 'GET'))],
      ['vault_a', (tx) => tx.write(patient('w2'))],
    ]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.ok(await content('vault_a', 'w2'));
    assert.equal(await eventsAbout('w0'), 1);
    assert.equal((await store.audit.verify()).ok, true);
  });

  test('a transaction that fails after a search (its writes already sent) rolls back alone', async () => {
    const outcomes = await together([
      ['vault_a', (tx) => tx.write(patient('s1'))],
      [
        'vault_a',
        async (tx) => {
          await tx.write(patient('s2'));
          await tx.audit(event('vault_a', 'Patient/s2'));
          // The search must see s1 (an earlier transaction of the group) and s2 (its own write).
          const seen = await tx.search({
            type: 'Patient',
            filters: [],
            sort: [],
            limit: 100,
            offset: 0,
            total: false,
          });
          const ids = seen.matches.map((m) => m.id);
          assert.ok(ids.includes('s1') && ids.includes('s2'), `search saw ${ids}`);
          await tx.write(patient('s3'));
          throw new Error('refused after the search');
        },
      ],
      ['vault_a', (tx) => tx.write(patient('s4'))],
    ]);
    assert.equal(outcomes[1]?.status, 'rejected');
    assert.equal(((outcomes[1] as PromiseRejectedResult).reason as Error).message, 'refused after the search');
    assert.ok(await content('vault_a', 's1'));
    assert.equal(await content('vault_a', 's2'), undefined);
    assert.equal(await content('vault_a', 's3'), undefined);
    assert.ok(await content('vault_a', 's4'));
    assert.equal(await eventsAbout('s2'), 0);
    assert.equal((await store.audit.verify()).ok, true);
  });

  test('a transaction reads what an earlier one of its group wrote, and may build on it', async () => {
    const outcomes = await together([
      ['vault_a', (tx) => tx.write(patient('u1'))],
      [
        'vault_a',
        async (tx) => {
          const seen = await tx.current('Patient', 'u1');
          assert.equal(seen?.version, 1);
          await tx.write(patient('u1', 2));
        },
      ],
      [
        'vault_a',
        async (tx) => {
          assert.equal((await tx.current('Patient', 'u1'))?.version, 2);
          await tx.write(patient('u1', 3));
        },
      ],
    ]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['fulfilled', 'fulfilled', 'fulfilled'],
    );
    assert.equal((await store.resources.current('vault_a', 'Patient', 'u1'))?.version, 3);
    assert.deepEqual(
      (await store.resources.history('vault_a', { type: 'Patient', id: 'u1', limit: 10 })).map((v) => v.version),
      [3, 2, 1],
    );
  });

  test('prefetched versions are what current() answers: earlier jobs of the group included, own writes after', async () => {
    const outcomes = await together([
      ['vault_a', (tx) => tx.write(patient('p1'))],
      [
        'vault_a',
        async (tx) => {
          await tx.prefetch?.([
            { type: 'Patient', id: 'p1' },
            { type: 'Patient', id: 'p2' },
          ]);
          assert.equal((await tx.current('Patient', 'p1'))?.version, 1, 'the earlier job of the group wrote p1');
          assert.equal(await tx.current('Patient', 'p2'), undefined);
          await tx.write(patient('p1', 2));
          await tx.write(patient('p2'));
          assert.equal((await tx.current('Patient', 'p1'))?.version, 2, 'its own write of p1');
          assert.equal((await tx.current('Patient', 'p2'))?.version, 1, 'its own write of p2');
        },
      ],
    ]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['fulfilled', 'fulfilled'],
      String(outcomes.map((o) => (o.status === 'rejected' ? o.reason : '')).join(' ')),
    );
    assert.equal((await store.resources.current('vault_a', 'Patient', 'p1'))?.version, 2);
  });

  test('transactions of two vaults in one group each write to their own vault only', async () => {
    const outcomes = await together([
      ['vault_a', (tx) => tx.write(patient('v1'))],
      ['vault_b', (tx) => tx.write(patient('v2'))],
      [
        'vault_a',
        async (tx) => {
          await tx.write(patient('v3'));
          throw new Error('changed its mind');
        },
      ],
      ['vault_b', (tx) => tx.write(patient('v4'))],
      ['vault_a', (tx) => tx.write(patient('v5'))],
    ]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled'],
    );
    assert.ok(await content('vault_a', 'v1'));
    assert.ok(await content('vault_a', 'v5'));
    assert.ok(await content('vault_b', 'v2'));
    assert.ok(await content('vault_b', 'v4'));
    for (const id of ['v2', 'v4']) assert.equal(await content('vault_a', id), undefined);
    for (const id of ['v1', 'v3', 'v5']) assert.equal(await content('vault_b', id), undefined);
    assert.equal(await content('vault_a', 'v3'), undefined);
  });

  test('reads asked together, of two vaults, each answer from their own vault only', async () => {
    await together([
      ['vault_a', (tx) => tx.write(patient('q1'))],
      ['vault_b', (tx) => tx.write(patient('q2'))],
    ]);
    await together([['vault_a', (tx) => tx.write(patient('q1', 2))]]);
    // In one turn of the event loop: the PostgreSQL store sends these as one statement per vault.
    const read = (partition: string, type: string, id: string) => store.resources.current(partition, type, id);
    const [a1, b1, a2, b2, a1again, wrongType, absent] = await Promise.all([
      read('vault_a', 'Patient', 'q1'),
      read('vault_b', 'Patient', 'q1'),
      read('vault_a', 'Patient', 'q2'),
      read('vault_b', 'Patient', 'q2'),
      read('vault_a', 'Patient', 'q1'),
      read('vault_a', 'Observation', 'q1'),
      read('vault_a', 'Patient', 'nobody'),
    ]);
    assert.equal(a1?.version, 2, 'the write acknowledged before the read');
    assert.equal(JSON.parse(a1?.content ?? '{}').meta.versionId, '2');
    assert.equal(a1again?.version, 2);
    assert.equal(b2?.version, 1);
    assert.equal(b2?.id, 'q2');
    for (const none of [b1, a2, wrongType, absent]) assert.equal(none, undefined);
  });

  // The SQLite store keeps the current versions it has read (store/sqlite/current-versions.ts): what it keeps must
  // never be a version that was rolled back, nor one that another process has since replaced.
  test('a read while a write is open, then rolled back, leaves reads answering the committed version', async () => {
    await together([['vault_a', (tx) => tx.write(patient('k1'))]]);
    assert.equal((await store.resources.current('vault_a', 'Patient', 'k1'))?.version, 1);
    const outcomes = await together([
      [
        'vault_a',
        async (tx) => {
          await tx.write(patient('k1', 2));
          // A read of another request, between the write and the end of its transaction (on SQLite the same
          // connection, which sees the uncommitted row).
          await store.resources.current('vault_a', 'Patient', 'k1');
          throw new Error('changed its mind');
        },
      ],
    ]);
    assert.equal(outcomes[0]?.status, 'rejected');
    for (let i = 0; i < 2; i++) {
      const read = await store.resources.current('vault_a', 'Patient', 'k1');
      assert.equal(read?.version, 1);
      assert.equal(JSON.parse(read?.content ?? '{}').meta.versionId, '1');
    }
  });

  test('a version written through another connection to the database is read at once', async () => {
    await together([['vault_a', (tx) => tx.write(patient('k2'))]]);
    assert.equal((await store.resources.current('vault_a', 'Patient', 'k2'))?.version, 1);
    // Another process (the CLI, a second server) as far as this store can tell.
    const other = await openStore({
      dataDir,
      databaseUrl: TEST_STORE === 'postgres' ? postgresUrlFor(dataDir) : undefined,
    });
    try {
      await other.resources.transaction('vault_a', (tx) => tx.write(patient('k2', 2)));
    } finally {
      await other.close();
    }
    const read = await store.resources.current('vault_a', 'Patient', 'k2');
    assert.equal(read?.version, 2);
    assert.equal(JSON.parse(read?.content ?? '{}').meta.versionId, '2');
  });

  test('events holding quotes, backslashes, braces and non-ASCII are stored as given and their chain verifies', async () => {
    // On PostgreSQL an append writes its events into the statement's text as literals (audit-append.ts).
    const hostile = [
      `Patient/it's`,
      'Patient/back\\slash\\x00',
      'Patient/"quoted",{braced}',
      "Patient/\\'mixed\\''",
      'Patient/é—😀',
    ];
    const client = `client'\\"{x}`;
    await store.audit.append(
      hostile.map((object) =>
        auditRecord({
          type: EVENT.rest,
          subtype: EVENT.rest_('read'),
          action: 'R',
          outcome: '0',
          who: { clientId: client, address: "127.0.0.1'--" },
          clientRole: '110152',
          partition: 'vault_a',
          objects: [object],
          observer: 'https://localhost',
        }),
      ),
    );
    for (const object of hostile) {
      const found = await store.audit.search({ entity: [object], limit: 10, offset: 0 });
      assert.equal(found.total, 1, object);
      // Events come back as their BALP JSON text.
      const json = found.events[0] as string;
      for (const value of [object, client, "127.0.0.1'--"])
        assert.ok(json.includes(JSON.stringify(value).slice(1, -1)), value);
    }
    assert.equal((await store.audit.verify()).ok, true);
  });

  test('versions are stamped after the instant committedThrough answered, by every transaction of a group', async () => {
    const through = await store.resources.committedThrough();
    const stamps = await together(
      ['ct_a', 'ct_b', 'ct_c'].map((id) => [
        'vault_a',
        async (tx) => {
          const stamp = tx.now();
          await tx.write({ ...patient(id), lastUpdated: new Date(stamp).toISOString() });
          return stamp;
        },
      ]),
    );
    for (const s of stamps) {
      assert.equal(s.status, 'fulfilled');
      assert.ok((s as PromiseFulfilledResult<number>).value > through, 'a later version is stamped after it');
    }
  });

  test('a host clock stepped back an hour stamps nothing before the newest version written', async () => {
    const stamp = await store.resources.transaction('vault_a', async (tx) => {
      const s = tx.now();
      await tx.write({ ...patient('ct_clock'), lastUpdated: new Date(s).toISOString() });
      return s;
    });
    const real = Date.now;
    Date.now = () => real() - 3_600_000;
    try {
      const later = await store.resources.transaction('vault_a', async (tx) => tx.now());
      assert.ok(later >= stamp, `stamped ${new Date(later).toISOString()} after ${new Date(stamp).toISOString()}`);
      assert.ok((await store.resources.committedThrough()) >= stamp - 1);
    } finally {
      Date.now = real;
    }
  });

  test('a clock set back behind the newest version committed stamps nothing before it, on every node', async () => {
    // A database of its own: the stamps an hour ahead would hold back the other tests' clocks.
    const dir = mkdtempSync(join(tmpdir(), 'carevault-group-clock-'));
    const open = () =>
      openStore({ dataDir: dir, databaseUrl: TEST_STORE === 'postgres' ? postgresUrlFor(dir) : undefined });
    const node = await open();
    try {
      await addPartition(node, 'vault_c');
      // As if this version was stamped before the clock (the host's on SQLite, the database server's on
      // PostgreSQL) was set back an hour.
      const ahead = Date.now() + 3_600_000;
      await node.resources.transaction('vault_c', (tx) =>
        tx.write({ ...patient('ct_ahead'), lastUpdated: new Date(ahead).toISOString() }),
      );
      const later = await node.resources.transaction('vault_c', async (tx) => tx.now());
      assert.ok(later >= ahead, `stamped ${new Date(later).toISOString()} after ${new Date(ahead).toISOString()}`);
      assert.ok((await node.resources.committedThrough()) >= ahead - 1);
      if (TEST_STORE !== 'postgres') return;
      // Another node learns it from the database, not from having written it.
      const other = await open();
      try {
        assert.ok((await other.resources.transaction('vault_c', async (tx) => tx.now())) >= ahead);
        assert.ok((await other.resources.committedThrough()) >= ahead - 1);
      } finally {
        await other.close();
      }
    } finally {
      await node.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('committedThrough waits for a transaction between its stamp and its commit, and answers after the stamp', {
    skip: TEST_STORE !== 'postgres' && 'only PostgreSQL keeps a transaction open across turns of the event loop',
  }, async () => {
    let release = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let stamped: number | undefined;
    const open = store.resources.transaction('vault_a', async (tx) => {
      stamped = tx.now();
      await tx.write({ ...patient('ct_open'), lastUpdated: new Date(stamped).toISOString() });
      await gate; // a long transaction Bundle, as far as the others can tell
    });
    while (stamped === undefined) await new Promise((resolve) => setTimeout(resolve, 5));
    let answered: number | undefined;
    const through = store.resources.committedThrough().then((t) => {
      answered = t;
      return t;
    });
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(answered, undefined, 'no answer while a stamped version is not yet committed');
    release();
    await open;
    const t = await through;
    assert.ok(t >= stamped, `${t} is not before the open transaction's stamp ${stamped}`);
    assert.equal((await store.resources.current('vault_a', 'Patient', 'ct_open'))?.version, 1);
  });

  test("a node that stops inside a transaction holds up the other nodes' writes only until the database ends it", {
    skip: TEST_STORE !== 'postgres' && 'nodes share a database on PostgreSQL only',
    timeout: 60_000,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'carevault-group-idle-'));
    const url = postgresUrlFor(dir);
    const frozen = await openStore({ dataDir: dir, databaseUrl: url, idleTransactionTimeout: 1000 });
    const other = await openStore({ dataDir: dir, databaseUrl: url });
    try {
      await addPartition(frozen, 'vault_f');
      let entered = () => {};
      const inside = new Promise<void>((resolve) => {
        entered = resolve;
      });
      let wake = () => {};
      const asleep = new Promise<void>((resolve) => {
        wake = resolve;
      });
      // Holds the write lock from its first statement, then stops answering (as a paused or cut-off node would).
      const stuck = frozen.resources.transaction('vault_f', async (tx) => {
        await tx.write(patient('fz_1'));
        entered();
        await asleep;
      });
      await inside;
      const started = performance.now();
      await other.resources.transaction('vault_f', (tx) => tx.write(patient('fz_2')));
      const waited = performance.now() - started;
      assert.ok(waited >= 500, `waited ${waited} ms: the other node's write did not wait for the lock`);
      assert.ok(waited < 15_000, `waited ${waited} ms`);
      wake();
      await assert.rejects(stuck, (err: Error) => err.name === 'StoreUnavailableError');
      assert.equal(await other.resources.current('vault_f', 'Patient', 'fz_1'), undefined);
      assert.equal((await other.resources.current('vault_f', 'Patient', 'fz_2'))?.version, 1);
      // The node that woke up writes again without a restart.
      await frozen.resources.transaction('vault_f', (tx) => tx.write(patient('fz_3')));
      assert.equal((await other.resources.current('vault_f', 'Patient', 'fz_3'))?.version, 1);
    } finally {
      await frozen.close();
      await other.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('two nodes appending audit events in turns and together keep one chain', {
    skip: TEST_STORE !== 'postgres' && 'nodes share a database on PostgreSQL only',
  }, async () => {
    // A second store on the same database is a second node: its own pools, its own idea of the chain's head.
    const other = await openStore({ dataDir, databaseUrl: postgresUrlFor(dataDir) });
    try {
      const append = (s: Store, name: string) => s.audit.append([event('vault_a', `Patient/${name}`)]);
      for (let round = 0; round < 3; round++) {
        await append(store, `na${round}`);
        await append(store, `nb${round}`);
        await append(other, `nc${round}`);
        await append(other, `nd${round}`);
        await Promise.all([append(store, `ne${round}`), append(other, `nf${round}`), append(store, `ng${round}`)]);
      }
      for (const p of ['na', 'nb', 'nc', 'nd', 'ne', 'nf', 'ng']) {
        for (let round = 0; round < 3; round++) assert.equal(await eventsAbout(`${p}${round}`), 1, `${p}${round}`);
      }
      assert.deepEqual(await store.audit.verify(), await other.audit.verify());
      assert.equal((await store.audit.verify()).ok, true);
    } finally {
      await other.close();
    }
  });
});
