/** How a request is retried: exponential backoff with full jitter, bounded in attempts and in total time. */
export interface RetryPolicy {
  /** Attempts in all, the first included. Default 6. */
  maxAttempts: number;
  /** First backoff ceiling; doubles each attempt. Default 250 ms. */
  baseDelayMs: number;
  /** Largest single wait, also for Retry-After. Default 30 s. */
  maxDelayMs: number;
  /** No new attempt starts after this much time since the first. Default 120 s. */
  maxElapsedMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 6,
  baseDelayMs: 250,
  maxDelayMs: 30_000,
  maxElapsedMs: 120_000,
};

/** Statuses worth repeating an idempotent request for. */
export const RETRYABLE_STATUS = new Set([429, 502, 503, 504]);

/** Full jitter (AWS architecture blog): uniform in [0, min(max, base·2^attempt)]; Retry-After wins when given. */
export function backoffMs(
  policy: RetryPolicy,
  attempt: number,
  retryAfterSeconds?: number,
  random = Math.random,
): number {
  if (retryAfterSeconds !== undefined) return Math.min(retryAfterSeconds * 1000, policy.maxDelayMs);
  return Math.floor(random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt));
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
