import { LRUCache } from 'lru-cache';

/**
 * Brute-force protection for the login page: after `freeAttempts` failures for one username (from any
 * address) or from one address (for any username), each further attempt must wait, doubling up to 15 min.
 * A success clears the username's counter. In-process; several nodes each keep their own counters.
 */
export class LoginThrottle {
  private readonly failures = new LRUCache<string, { count: number; last: number }>({
    max: 100_000,
    ttl: 3600_000,
  });

  constructor(
    private readonly freeAttempts = 5,
    private readonly maxDelayMs = 15 * 60_000,
  ) {}

  /** Milliseconds the caller must still wait before another attempt for this username/address. */
  retryAfterMs(username: string, address: string, now = Date.now()): number {
    return Math.max(this.wait(`u:${username.toLowerCase()}`, now), this.wait(`a:${address}`, now, 4));
  }

  failed(username: string, address: string, now = Date.now()): void {
    for (const key of [`u:${username.toLowerCase()}`, `a:${address}`]) {
      const f = this.failures.get(key);
      this.failures.set(key, { count: (f?.count ?? 0) + 1, last: now });
    }
  }

  succeeded(username: string): void {
    this.failures.delete(`u:${username.toLowerCase()}`);
  }

  private wait(key: string, now: number, factor = 1): number {
    const f = this.failures.get(key);
    const free = this.freeAttempts * factor;
    if (!f || f.count < free) return 0;
    const delay = Math.min(this.maxDelayMs, 1000 * 2 ** (f.count - free));
    return Math.max(0, f.last + delay - now);
  }
}
