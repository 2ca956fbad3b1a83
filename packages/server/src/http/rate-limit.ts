import type { IncomingMessage } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { dialectOf, errorBody } from './dialect.ts';

export interface RateDecision {
  allowed: boolean;
  /** Whole seconds until one more request fits (Retry-After). */
  retryAfterSeconds: number;
}

/**
 * Token buckets: each key holds up to `count` tokens and regains `count` per window, continuously; a request
 * takes one. Bursts up to `count` pass, a steady rate of count/window passes forever.
 */
export interface RateLimiter {
  take(key: string): Promise<RateDecision>;
  close(): Promise<void>;
}

export interface RateLimitConfig {
  count: number;
  windowMs: number;
}

/** One process's buckets (the default). */
export class MemoryRateLimiter implements RateLimiter {
  private readonly buckets = new LRUCache<string, { tokens: number; at: number }>({ max: 100_000 });
  constructor(private readonly limit: RateLimitConfig) {}

  async take(key: string, now = Date.now()): Promise<RateDecision> {
    const { count, windowMs } = this.limit;
    const rate = count / windowMs;
    const b = this.buckets.get(key) ?? { tokens: count, at: now };
    const tokens = Math.min(count, b.tokens + (now - b.at) * rate);
    if (tokens >= 1) {
      this.buckets.set(key, { tokens: tokens - 1, at: now });
      return { allowed: true, retryAfterSeconds: 0 };
    }
    this.buckets.set(key, { tokens, at: now });
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - tokens) / rate / 1000)) };
  }

  async close(): Promise<void> {}
}

// The same bucket, atomically in Redis, on Redis's clock (so several nodes agree on time).
const TAKE = `
local capacity = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
local rate = capacity / window
tokens = math.min(capacity, tokens + (now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], window * 2)
return {allowed, wait}
`;

/**
 * Buckets shared by every node on one Redis (CAREVAULT_REDIS_URL). When Redis cannot be reached the request
 * is let through and the failure logged: the limit protects availability, so it must not take it away.
 */
export class RedisRateLimiter implements RateLimiter {
  constructor(
    private readonly redis: Redis,
    private readonly limit: RateLimitConfig,
    private readonly prefix: string,
    private readonly log: Pick<Logger, 'error'>,
  ) {
    this.redis.defineCommand('carevaultTake', { numberOfKeys: 1, lua: TAKE });
  }

  async take(key: string): Promise<RateDecision> {
    try {
      const [allowed, waitMs] = (await (
        this.redis as Redis & { carevaultTake(k: string, c: number, w: number): Promise<[number, number]> }
      ).carevaultTake(`${this.prefix}rl:${key}`, this.limit.count, this.limit.windowMs)) as [number, number];
      return { allowed: allowed === 1, retryAfterSeconds: allowed === 1 ? 0 : Math.max(1, Math.ceil(waitMs / 1000)) };
    } catch (err) {
      this.log.error({ err: { message: (err as Error).message } }, 'rate limit check failed; request let through');
      return { allowed: true, retryAfterSeconds: 0 };
    }
  }

  async close(): Promise<void> {}
}

const LIMITER = Symbol.for('carevault.rateLimiter');

/** Makes the limiter reachable from every request (the per-client check runs where tokens are verified). */
export function attachLimiter(req: IncomingMessage, limiter: RateLimiter): void {
  (req as IncomingMessage & { [LIMITER]?: RateLimiter })[LIMITER] = limiter;
}

export function limiterOf(req: IncomingMessage): RateLimiter | undefined {
  return (req as IncomingMessage & { [LIMITER]?: RateLimiter })[LIMITER];
}

/** 429 in the dialect of the endpoint: OperationOutcome `throttled` (J50) for FHIR, OAuth-style JSON elsewhere. */
function tooMany(req: FastifyRequest, reply: FastifyReply, retryAfter: number) {
  const { contentType, body } = errorBody(
    dialectOf(req.url),
    'throttled',
    'rate limit exceeded; retry after the Retry-After delay',
  );
  return reply
    .code(429)
    .header('retry-after', String(retryAfter))
    .header('cache-control', 'no-store')
    .type(contentType)
    .send(body);
}

/**
 * Requests without a Bearer token (token requests, discovery, pages) count against the caller's address;
 * requests with one count against their client once the token is verified (fhir/bearer.ts).
 */
export function addressLimit(limiter: RateLimiter) {
  return async (req: FastifyRequest, reply: FastifyReply) => {
    attachLimiter(req.raw, limiter);
    if (/^Bearer\s/i.test(req.headers.authorization ?? '')) return;
    const d = await limiter.take(`ip:${req.ip}`);
    if (!d.allowed) return tooMany(req, reply, d.retryAfterSeconds);
  };
}
