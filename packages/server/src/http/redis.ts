import { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * The one Redis connection of a node (CAREVAULT_REDIS_URL): rate-limit buckets and login-failure counters.
 * A command fails within a second while Redis is away; each user of the connection decides what a failure
 * means (rate limits let the request through, logins are refused).
 */
export function connectRedis(url: string, log: Pick<Logger, 'error'>): Redis {
  const redis = new Redis(url, {
    maxRetriesPerRequest: 1,
    // Every request takes from its rate-limit bucket: commands issued in one turn of the event loop go out as
    // one write (a socket write per command was ≈ 10 % of a read's CPU on PostgreSQL + Redis).
    enableAutoPipelining: true,
    enableOfflineQueue: true,
    connectTimeout: 2000,
    // While Redis is away a command is answered (with an error) within a second, not after reconnects.
    commandTimeout: 1000,
    retryStrategy: (attempt) => Math.min(attempt * 200, 1000),
  });
  let last = 0;
  redis.on('error', (err: Error) => {
    // Reconnect attempts fail every few hundred ms while Redis is down: one line per 10 s is enough.
    if (Date.now() - last < 10_000) return;
    last = Date.now();
    log.error({ err: { message: err.message } }, 'Redis error');
  });
  return redis;
}
