import { FhirResponseError, TransportError } from '../../errors.js';
import type { FhirClient } from '../../fhir-client.js';
import type { BundleEntry, Resource } from '../../fhir-types.js';
import { backoffMs, DEFAULT_RETRY, type RetryPolicy, sleep } from '../../retry.js';

export interface PushFailure {
  id: string;
  status: number;
  diagnostics: string;
}

export interface PushResult {
  pushed: string[];
  failed: PushFailure[];
}

const RETRY_ENTRY = (status: number) => status === 429 || status >= 500 || status === 0;

/**
 * Seed 000's write: batch Bundles of `PUT Observation/<uuid>` (idempotent, so a whole batch may be repeated).
 * The client retries whole batches on 429/5xx/network errors; entries a batch answers with 429/5xx are sent
 * again in later rounds; an entry refused for good (another 4xx) is reported once, never retried.
 */
export async function pushObservations(
  fhir: FhirClient,
  resources: Resource[],
  options: { batchSize?: number; rounds?: number; retry?: Partial<RetryPolicy>; signal?: AbortSignal } = {},
): Promise<PushResult> {
  const batchSize = Math.max(1, Math.min(options.batchSize ?? 50, 1000));
  const policy = { ...DEFAULT_RETRY, ...options.retry };
  const rounds = options.rounds ?? policy.maxAttempts;
  const pushed: string[] = [];
  const failed = new Map<string, PushFailure>();
  let pending = resources;
  for (let round = 0; pending.length > 0 && round < rounds; round++) {
    if (round > 0) await sleep(backoffMs(policy, round), options.signal);
    const again: Resource[] = [];
    for (let i = 0; i < pending.length; i += batchSize) {
      const chunk = pending.slice(i, i + batchSize);
      const entries: BundleEntry[] = chunk.map((r) => ({
        resource: r,
        request: { method: 'PUT', url: `Observation/${r.id}` },
      }));
      let response: BundleEntry[];
      try {
        response = (await fhir.batch(entries, { signal: options.signal as AbortSignal })).entry ?? [];
      } catch (err) {
        const status = err instanceof FhirResponseError ? err.status : 0;
        const diagnostics = err instanceof Error ? err.message : String(err);
        for (const r of chunk) failed.set(r.id as string, { id: r.id as string, status, diagnostics });
        if (RETRY_ENTRY(status) || err instanceof TransportError) again.push(...chunk);
        continue;
      }
      chunk.forEach((r, n) => {
        const id = r.id as string;
        const status = Number.parseInt(response[n]?.response?.status ?? '0', 10);
        if (status >= 200 && status < 300) {
          pushed.push(id);
          failed.delete(id);
          return;
        }
        const outcome = response[n]?.response?.outcome as
          | { issue?: { diagnostics?: string; code?: string }[] }
          | undefined;
        const issue = outcome?.issue?.[0];
        failed.set(id, {
          id,
          status,
          diagnostics: issue?.diagnostics ?? issue?.code ?? `entry answered ${status || 'nothing'}`,
        });
        if (RETRY_ENTRY(status)) again.push(r);
      });
    }
    pending = again;
  }
  return { pushed, failed: [...failed.values()] };
}
