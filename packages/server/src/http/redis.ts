import { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * The one Redis connection of a node (CAREVAULT_REDIS_URL): rate-limit buckets and login-failure counters.
 * A command fails fast (one retry, 2 s to connect) instead of queueing while Redis is away; each user of the
 * connection decides what a failure means (rate limits let the request through, logins are refused).
 */
export function connectRedis(url: string, log: Pick<Logger, 'error'>): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: true, connectTimeout: 2000 });
  let last = 0;
  redis.on('error', (err: Error) => {
    // Reconnect attempts fail every few hundred ms while Redis is down: one line per 10 s is enough.
    if (Date.now() - last < 10_000) return;
    last = Date.now();
    log.error({ err: { message: err.message } }, 'Redis error');
  });
  return redis;
}
