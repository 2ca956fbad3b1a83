/**
 * Audit trail size (issue 14 §2): bytes on disk per audit event. A `carevault serve` child (SQLite) answers
 * 10,000 requests of each kind — reads of a Patient and of an Observation by id, a search, a token request;
 * the database is measured before and after each (dbstat: every table and index, after a WAL checkpoint), and
 * the growth is divided by the events written and split per table.
 * Then what writing the trail costs, without HTTP: read events appended to a SQLite store in this process in
 * groups of 14 (as concurrent reads share a commit), CPU µs per event.
 *   npm run bench:audit        (BENCH_READS: requests per kind, default 10000)
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Agent, request } from 'undici';
import { addClient } from '../packages/server/src/admin/clients.ts';
import { withStore } from '../packages/server/src/admin/vault.ts';
import { actionFor, auditRecord, clientRoleFor, EVENT } from '../packages/server/src/audit/balp.ts';
import { loadConfig } from '../packages/server/src/config/index.ts';
import { openStore } from '../packages/server/src/store/index.ts';
import { addGrant } from '../packages/server/src/vault/grants.ts';
import { addPartition } from '../packages/server/src/vault/partitions.ts';
import { freePort } from '../packages/server/test/helpers/platform.ts';
import { secretToken, startServer, stopServer } from './lib.ts';

const READS = Number(process.env.BENCH_READS ?? 10_000);
const CONNECTIONS = 10;

function sizes(file: string): Map<string, number> {
  const db = new Database(file);
  try {
    db.pragma('wal_checkpoint(TRUNCATE)');
    const rows = db.prepare('SELECT name, SUM(pgsize) AS bytes FROM dbstat GROUP BY name').all() as {
      name: string;
      bytes: number;
    }[];
    return new Map(rows.map((r) => [r.name, r.bytes]));
  } finally {
    db.close();
  }
}

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), 'carevault-bench-audit-'));
  const port = await freePort();
  const config = loadConfig({ dataDir, port }, {});
  const base = `https://localhost:${port}`;
  const { client_secret } = await addClient(config, 'bench-reader', {
    auth: 'client_secret_basic',
    scope: 'system/*.cruds',
  });
  await withStore(config, async (store) => {
    await addPartition(store, 'bench');
    await addGrant(store, { partition: 'bench', client: 'bench-reader', scope: 'system/*.cruds' });
  });
  const server = await startServer(dataDir, port);
  const agent = new Agent({ connect: { ca: readFileSync(join(dataDir, 'pki', 'ca.pem'), 'utf8') } });
  try {
    const token = await secretToken(base, agent, 'bench-reader', client_secret as string);
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/fhir+json' };
    const created = await request(`${base}/fhir/bench/Patient`, {
      method: 'POST',
      dispatcher: agent,
      headers,
      body: JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Bench', given: ['Audit'] }] }),
    });
    const { id } = (await created.body.json()) as { id: string };
    const observation = await request(`${base}/fhir/bench/Observation`, {
      method: 'POST',
      dispatcher: agent,
      headers,
      body: JSON.stringify({
        resourceType: 'Observation',
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
        subject: { reference: `Patient/${id}` },
        valueQuantity: { value: 72, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
      }),
    });
    const { id: obsId } = (await observation.body.json()) as { id: string };
    const file = join(dataDir, 'carevault.sqlite');
    const eventCount = () => {
      const db = new Database(file, { readonly: true });
      try {
        return db.prepare('SELECT COUNT(*) FROM audit_events').pluck().get() as number;
      } finally {
        db.close();
      }
    };
    const basic = `Basic ${Buffer.from(`bench-reader:${client_secret}`).toString('base64')}`;
    const kinds: [string, () => Promise<number>][] = [
      ['read Patient/id', () => call(`${base}/fhir/bench/Patient/${id}`, { headers })],
      ['read Observation/id', () => call(`${base}/fhir/bench/Observation/${obsId}`, { headers })],
      [
        'search Observation?subject&code',
        () => call(`${base}/fhir/bench/Observation?subject=Patient/${id}&code=http://loinc.org|8867-4`, { headers }),
      ],
      [
        'token (client_credentials)',
        () =>
          call(`${base}/oauth/token`, {
            method: 'POST',
            headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
            body: 'grant_type=client_credentials',
          }),
      ],
    ];
    async function call(url: string, init: { method?: string; headers: Record<string, string>; body?: string }) {
      const res = await request(url, { dispatcher: agent, ...init } as Parameters<typeof request>[1]);
      await res.body.arrayBuffer();
      return res.statusCode;
    }
    const perKind: number[] = [];
    for (const [name, fn] of kinds) {
      const before = sizes(file);
      const eventsBefore = eventCount();
      let next = 0;
      await Promise.all(
        Array.from({ length: CONNECTIONS }, async () => {
          while (next < READS) {
            next++;
            const status = await fn();
            if (status !== 200) throw new Error(`${name} answered ${status}`);
          }
        }),
      );
      const after = sizes(file);
      const events = eventCount() - eventsBefore;
      let total = 0;
      const parts: string[] = [];
      for (const [table, bytes] of after) {
        const grown = bytes - (before.get(table) ?? 0);
        if (grown <= 0) continue;
        total += grown;
        parts.push(`${table} ${(grown / events).toFixed(0)}`);
      }
      const sample = new Database(file, { readonly: true });
      const last = sample.prepare('SELECT content, packed FROM audit_events ORDER BY seq DESC LIMIT 1').get() as {
        content: string;
        packed: Buffer | null;
      };
      sample.close();
      perKind.push(total / events);
      console.log(
        `${name}: ${(total / events).toFixed(0)} bytes per event on disk (${events} events) — ${parts.join(', ')}; ` +
          `the last event as stored: ${last.packed ? `${last.packed.length} bytes packed` : `${last.content.length} bytes of JSON`}`,
      );
    }
    const mean = perKind.reduce((a, b) => a + b, 0) / perKind.length;
    console.log(
      `audit on disk: ${mean.toFixed(0)} bytes per event, mean of the ${perKind.length} kinds above (goal ≤ 600)`,
    );
  } finally {
    await agent.close();
    await stopServer(server);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** CPU and wall µs per read event appended through the store: building, hashing, packing, inserting, committing. */
async function appendCost(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'carevault-bench-audit-'));
  const store = await openStore({ dataDir });
  const patients = Array.from({ length: 200 }, () => `Patient/${randomUUID()}`);
  const GROUP = 14;
  const event = (i: number) =>
    auditRecord({
      type: EVENT.rest,
      subtype: EVENT.rest_('read'),
      action: actionFor('read'),
      outcome: '0',
      who: { clientId: 'bench', tokenId: randomUUID(), address: '127.0.0.1', requestId: randomUUID() },
      clientRole: clientRoleFor('read'),
      partition: 'bench',
      patients: [patients[i % patients.length] as string],
      objects: [`Observation/${randomUUID()}`],
      nen7513: { autorisatieprotocol: 'vault-grant:bench', toestemmingsprofiel: 'system/*.cruds' },
      observer: 'https://localhost',
    });
  const append = async (n: number) => {
    for (let g = 0; g < n / GROUP; g++) {
      await Promise.all(Array.from({ length: GROUP }, (_, k) => store.audit.append([event(g * GROUP + k)])));
    }
  };
  try {
    await append(5000);
    const n = READS * 6;
    const cpu0 = process.cpuUsage();
    const start = performance.now();
    await append(n);
    const cpu = process.cpuUsage(cpu0);
    const wall = (performance.now() - start) * 1000;
    console.log(
      `audit append (store, groups of ${GROUP}): ${((cpu.user + cpu.system) / n).toFixed(0)} µs CPU, ${(wall / n).toFixed(0)} µs wall per read event (${n} events)`,
    );
  } finally {
    await store.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
await appendCost();
