import type { FhirClient, FhirResponse, RequestOptions } from '../fhir-client.js';
import { sleep } from '../retry.js';
import { parseRetryAfter } from '../token-manager.js';

export interface PollOptions {
  /** How long to wait in all; past it `onTimeout` is thrown and the job is left to the server. */
  timeoutMs: number;
  /** Between polls when the server names no Retry-After; never more than 60 s at once. */
  pollIntervalMs: number;
  signal?: AbortSignal | undefined;
  /** Each `X-Progress` the server reports while the request runs. */
  onProgress?: ((progress: string | undefined) => void) | undefined;
  onTimeout(statusUrl: string): Error;
}

const MAX_WAIT_MS = 60_000;

/**
 * The FHIR asynchronous request pattern's status URL (async.html, and Bulk Data's), polled as the server asks
 * (Retry-After, else `pollIntervalMs`) until it answers something other than 202: the outcome. 429 and 5xx on a
 * poll are retried by the client like any read; an outcome that is an error is its `FhirResponseError`.
 */
export async function pollStatus<T>(client: FhirClient, statusUrl: string, o: PollOptions): Promise<FhirResponse<T>> {
  const request: RequestOptions = o.signal ? { signal: o.signal } : {};
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    const status = await client.request<T>('GET', statusUrl, undefined, request);
    if (status.status !== 202) return status;
    o.onProgress?.(status.headers.get('x-progress') ?? undefined);
    const retryAfter = parseRetryAfter(status.headers.get('retry-after'));
    const wait = Math.min(MAX_WAIT_MS, retryAfter === undefined ? o.pollIntervalMs : retryAfter * 1000);
    if (Date.now() + wait > deadline) throw o.onTimeout(statusUrl);
    await sleep(wait, o.signal);
  }
}
