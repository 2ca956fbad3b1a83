import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';

/** Failure counters by key; in one process, or in Redis so that every node counts the same failures. */
export interface FailureCounters {
  get(keys: string[]): Promise<({ count: number; last: number } | undefined)[]>;
  /** Adds one failure at `now` to each key. */
  add(keys: string[], now: number): Promise<void>;
  clear(key: string): Promise<void>;
}

const TTL_MS = 3600_000;

export class MemoryFailureCounters implements FailureCounters {
  private readonly failures = new LRUCache<string, { count: number; last: number }>({ max: 100_000, ttl: TTL_MS });
  async get(keys: string[]) {
    return keys.map((k) => this.failures.get(k));
  }
  async add(keys: string[], now: number) {
    for (const key of keys) {
      const f = this.failures.get(key);
      this.failures.set(key, { count: (f?.count ?? 0) + 1, last: now });
    }
  }
  async clear(key: string) {
    this.failures.delete(key);
  }
}

/**
 * Counters in Redis (CAREVAULT_REDIS_URL), one hash per key that expires an hour after its last failure.
 * Errors propagate: a login is refused while the counters cannot be read, never let through uncounted.
 */
export class RedisFailureCounters implements FailureCounters {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}
  async get(keys: string[]) {
    const rows = await Promise.all(keys.map((k) => this.redis.hmget(this.prefix + k, 'count', 'last')));
    return rows.map(([count, last]) => (count ? { count: Number(count), last: Number(last) } : undefined));
  }
  async add(keys: string[], now: number) {
    const m = this.redis.multi();
    for (const k of keys) {
      m.hincrby(this.prefix + k, 'count', 1);
      m.hset(this.prefix + k, 'last', String(now));
      m.pexpire(this.prefix + k, TTL_MS);
    }
    const results = await m.exec();
    const failed = results?.find(([err]) => err);
    if (!results || failed) throw failed?.[0] ?? new Error('Redis transaction was discarded');
  }
  async clear(key: string) {
    await this.redis.del(this.prefix + key);
  }
}

/**
 * Brute-force protection for the login page. Failures count per username *and address* — so someone who
 * knows a username can slow down guesses from their own address only, never lock its owner out from
 * elsewhere — plus one counter per address over every username (a spray from one address). After the free
 * attempts each further attempt must wait, doubling up to 15 min; a success clears that user's counter
 * for that address. The counters are shared by all nodes when they live in Redis.
 */
export class LoginThrottle {
  constructor(
    private readonly counters: FailureCounters = new MemoryFailureCounters(),
    private readonly freeAttempts = 5,
    private readonly maxDelayMs = 15 * 60_000,
    /** Free failures from one address over all usernames, as a multiple of `freeAttempts`. */
    private readonly addressFactor = 4,
  ) {}

  /** Milliseconds the caller must still wait before another attempt for this username from this address. */
  async retryAfterMs(username: string, address: string, now = Date.now()): Promise<number> {
    const [user, addr] = await this.counters.get([userKey(username, address), `a:${address}`]);
    return Math.max(this.wait(user, now), this.wait(addr, now, this.addressFactor));
  }

  failed(username: string, address: string, now = Date.now()): Promise<void> {
    return this.counters.add([userKey(username, address), `a:${address}`], now);
  }

  succeeded(username: string, address: string): Promise<void> {
    return this.counters.clear(userKey(username, address));
  }

  private wait(f: { count: number; last: number } | undefined, now: number, factor = 1): number {
    const free = this.freeAttempts * factor;
    if (!f || f.count < free) return 0;
    const delay = Math.min(this.maxDelayMs, 1000 * 2 ** (f.count - free));
    return Math.max(0, f.last + delay - now);
  }
}

const userKey = (username: string, address: string) => `u:${username.toLowerCase()}|${address}`;
