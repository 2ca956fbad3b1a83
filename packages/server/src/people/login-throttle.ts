import { LRUCache } from 'lru-cache';

/**
 * Brute-force protection for the login page. Failures count per username *and address* — so someone who
 * knows a username can slow down guesses from their own address only, never lock its owner out from
 * elsewhere — plus one counter per address over every username (a spray from one address). After the free
 * attempts each further attempt must wait, doubling up to 15 min; a success clears that user's counter
 * for that address. In-process; several nodes each keep their own counters.
 */
export class LoginThrottle {
  private readonly failures = new LRUCache<string, { count: number; last: number }>({
    max: 100_000,
    ttl: 3600_000,
  });

  constructor(
    private readonly freeAttempts = 5,
    private readonly maxDelayMs = 15 * 60_000,
    /** Free failures from one address over all usernames, as a multiple of `freeAttempts`. */
    private readonly addressFactor = 4,
  ) {}

  /** Milliseconds the caller must still wait before another attempt for this username from this address. */
  retryAfterMs(username: string, address: string, now = Date.now()): number {
    return Math.max(this.wait(userKey(username, address), now), this.wait(`a:${address}`, now, this.addressFactor));
  }

  failed(username: string, address: string, now = Date.now()): void {
    for (const key of [userKey(username, address), `a:${address}`]) {
      const f = this.failures.get(key);
      this.failures.set(key, { count: (f?.count ?? 0) + 1, last: now });
    }
  }

  succeeded(username: string, address: string): void {
    this.failures.delete(userKey(username, address));
  }

  private wait(key: string, now: number, factor = 1): number {
    const f = this.failures.get(key);
    const free = this.freeAttempts * factor;
    if (!f || f.count < free) return 0;
    const delay = Math.min(this.maxDelayMs, 1000 * 2 ** (f.count - free));
    return Math.max(0, f.last + delay - now);
  }
}

const userKey = (username: string, address: string) => `u:${username.toLowerCase()}|${address}`;
