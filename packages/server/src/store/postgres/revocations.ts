import type pg from 'pg';
import type { RevocationStore } from '../types.ts';
import { run } from './connection.ts';
import type { Listener } from './listener.ts';

const CHANNEL = 'carevault_revoked';

export interface MirroredRevocations extends RevocationStore {
  /** Forgets revocations of tokens expired by `now` (epoch seconds), as the sweep deletes their rows. */
  prune(now: number): void;
}

/**
 * Revoked token ids mirrored in this node's memory, so that checking a token costs no roundtrip: a
 * revocation NOTIFYs every node with the schema, jti and expiry; the mirror is loaded from the table after
 * LISTEN and answers only while `notifications` is fresh (listener.ts), the table otherwise.
 */
export function revocationStore(pool: pg.Pool, schema: string, notifications: Listener): MirroredRevocations {
  const known = new Map<string, number>();
  notifications.subscribe({
    channel: CHANNEL,
    notify(payload) {
      try {
        const [from, jti, expiresAt] = JSON.parse(payload) as unknown[];
        if (from === schema && typeof jti === 'string') known.set(jti, Number(expiresAt));
      } catch {}
    },
    async load(client) {
      const rows = await client.query<{ jti: string; expires_at: number }>(
        'SELECT jti, expires_at FROM revoked_tokens',
      );
      for (const r of rows.rows) known.set(r.jti, Number(r.expires_at));
    },
  });
  return {
    async revoke(jti, expiresAt) {
      await run(
        pool,
        `WITH added AS (INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING)
         SELECT pg_notify('${CHANNEL}', ?)`,
        [jti, expiresAt, JSON.stringify([schema, jti, expiresAt])],
      );
      known.set(jti, expiresAt);
    },
    async isRevoked(jti) {
      notifications.start();
      if (notifications.fresh()) return known.has(jti);
      return (await run(pool, 'SELECT 1 FROM revoked_tokens WHERE jti = ?', [jti], { prepared: true })).length > 0;
    },
    prune(now) {
      for (const [jti, expiresAt] of known) if (expiresAt <= now) known.delete(jti);
    },
  };
}
