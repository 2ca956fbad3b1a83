import type pg from 'pg';
import type { RevocationStore } from '../types.ts';
import { newClient, type PgTarget, run } from './connection.ts';

const CHANNEL = 'carevault_revoked';
/** The listening connection answers a heartbeat this often… */
const HEARTBEAT_MS = 400;
/** …and the mirror answers only while the last answer is at most this old. */
const FRESH_MS = 1000;
const RETRY_MS = 1000;

export interface MirroredRevocations extends RevocationStore {
  /** Forgets revocations of tokens expired by `now` (epoch seconds), as the sweep deletes their rows. */
  prune(now: number): void;
  close(): Promise<void>;
}

/**
 * Revoked token ids mirrored in this node's memory, so that checking a token costs no roundtrip. Every node
 * LISTENs on one channel and a revocation NOTIFYs it (delivered on commit) with the schema, jti and expiry.
 * The mirror answers only while its listening connection is known to be alive: LISTENing, loaded from the table
 * after LISTEN (so nothing revoked in between is missed), and answering a heartbeat within the last second.
 * Otherwise — before the first check, while reconnecting, or when the connection went silent — every check
 * reads the table: a revocation on any node is seen by every node within a second, and never missed.
 */
export function revocationStore(pool: pg.Pool, target: PgTarget): MirroredRevocations {
  const known = new Map<string, number>();
  let listener: pg.Client | undefined; // connecting or connected
  let live = false; // listening and loaded
  let answeredAt = 0;
  let beating: pg.Client | undefined; // whose heartbeat is under way (one that hangs must not block the next)
  let closed = false;
  let heartbeat: NodeJS.Timeout | undefined;
  let retry: NodeJS.Timeout | undefined;

  const fresh = () => live && Date.now() - answeredAt <= FRESH_MS;

  function drop(client: pg.Client) {
    if (listener !== client) return;
    listener = undefined;
    live = false;
    client.end().catch(() => {});
    if (!closed) retry = setTimeout(listen, RETRY_MS).unref();
  }

  async function listen() {
    retry = undefined;
    const client = newClient(target);
    listener = client;
    client.on('error', () => drop(client));
    client.on('end', () => drop(client));
    client.on('notification', (n) => {
      // Any database user may NOTIFY this channel: what is not ours is ignored, never thrown.
      if (n.channel !== CHANNEL || !n.payload) return;
      try {
        const [schema, jti, expiresAt] = JSON.parse(n.payload) as unknown[];
        if (schema === target.schema && typeof jti === 'string') known.set(jti, Number(expiresAt));
      } catch {}
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
      const rows = await client.query<{ jti: string; expires_at: number }>(
        'SELECT jti, expires_at FROM revoked_tokens',
      );
      for (const r of rows.rows) known.set(r.jti, Number(r.expires_at));
      if (listener !== client) return;
      answeredAt = Date.now();
      live = true;
    } catch {
      drop(client);
    }
  }

  function start() {
    if (closed || heartbeat) return;
    void listen();
    heartbeat = setInterval(() => {
      const client = listener;
      if (!client || !live) return;
      // Silent for long (a connection dropped without a reset): start over on a new one.
      if (Date.now() - answeredAt > 5 * FRESH_MS) return drop(client);
      if (beating === client) return;
      beating = client;
      client
        .query('SELECT 1')
        .then(() => {
          if (listener === client) answeredAt = Date.now();
        })
        .catch(() => drop(client))
        .finally(() => {
          if (beating === client) beating = undefined;
        });
    }, HEARTBEAT_MS).unref();
  }

  return {
    async revoke(jti, expiresAt) {
      await run(
        pool,
        `WITH added AS (INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING)
         SELECT pg_notify('${CHANNEL}', ?)`,
        [jti, expiresAt, JSON.stringify([target.schema, jti, expiresAt])],
      );
      known.set(jti, expiresAt);
    },
    async isRevoked(jti) {
      start();
      if (fresh()) return known.has(jti);
      return (await run(pool, 'SELECT 1 FROM revoked_tokens WHERE jti = ?', [jti], { prepared: true })).length > 0;
    },
    prune(now) {
      for (const [jti, expiresAt] of known) if (expiresAt <= now) known.delete(jti);
    },
    async close() {
      closed = true;
      clearInterval(heartbeat);
      clearTimeout(retry);
      const client = listener;
      listener = undefined;
      live = false;
      await client?.end().catch(() => {});
    },
  };
}
