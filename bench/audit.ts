/**
 * Audit trail size (issue 14 §2): bytes on disk per audited read. A `carevault serve` child (SQLite) answers
 * 10,000 reads by id; the database is measured before and after (dbstat: every table and index, after a WAL
 * checkpoint), and the growth is split per table. Prints the per-event figure next to the event's JSON size.
 *   npm run bench:audit        (BENCH_READS, default 10000)
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Agent, request } from 'undici';
import { addClient } from '../packages/server/src/admin/clients.ts';
import { withStore } from '../packages/server/src/admin/vault.ts';
import { loadConfig } from '../packages/server/src/config/index.ts';
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
    const file = join(dataDir, 'carevault.sqlite');
    const before = sizes(file);
    let next = 0;
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async () => {
        while (next < READS) {
          next++;
          const res = await request(`${base}/fhir/bench/Patient/${id}`, { dispatcher: agent, headers });
          await res.body.arrayBuffer();
          if (res.statusCode !== 200) throw new Error(`read answered ${res.statusCode}`);
        }
      }),
    );
    const after = sizes(file);
    const events = await request(`${base}/audit/AuditEvent?_count=1`, { dispatcher: agent, headers });
    await events.body.arrayBuffer();
    let total = 0;
    const parts: string[] = [];
    for (const [name, bytes] of after) {
      const grown = bytes - (before.get(name) ?? 0);
      if (grown <= 0) continue;
      total += grown;
      parts.push(`${name} ${(grown / READS).toFixed(0)}`);
    }
    const sample = new Database(file, { readonly: true });
    const json = sample.prepare('SELECT content, packed FROM audit_events ORDER BY seq DESC LIMIT 1').get() as {
      content: string;
      packed: Buffer | null;
    };
    sample.close();
    console.log(
      `audit on disk: ${(total / READS).toFixed(0)} bytes per read event (${READS} reads; goal ≤ 600) — ${parts.join(', ')}; ` +
        `the event as stored: ${json.packed ? `${json.packed.length} bytes packed` : `${json.content.length} bytes of JSON`}`,
    );
  } finally {
    await agent.close();
    await stopServer(server);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
