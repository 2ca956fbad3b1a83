import { ResponseTooLargeError } from './errors.js';

/** What a FhirClient accepts as one answer unless told otherwise: a page of large documents, not a flood. */
export const DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024;
/** Token, discovery and error answers: small by nature. */
export const SMALL_RESPONSE_BYTES = 1024 * 1024;

/** Bytes that several answers share: each one read takes from it, and the one that passes it fails. */
export class ByteBudget {
  used = 0;
  constructor(readonly max: number) {}
}

/**
 * The response with a body that fails with `ResponseTooLargeError` past `limit` (by its Content-Length before
 * anything is read, else as the bytes arrive), and the connection given up: a broken or hostile server cannot
 * fill this process's memory, whoever reads the body (`json()`, `text()`, oauth4webapi). A `ByteBudget` limits
 * what several answers hold together.
 */
export function limitBody(res: Response, limit: number | ByteBudget): Response {
  const budget = typeof limit === 'number' ? new ByteBudget(limit) : limit;
  const url = res.url;
  const declared = res.headers.get('content-length');
  if (declared !== null && budget.used + Number(declared) > budget.max) {
    res.body?.cancel().catch(() => {});
    throw new ResponseTooLargeError(url, budget.max);
  }
  if (!res.body) return res;
  const body = res.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        budget.used += chunk.byteLength;
        if (budget.used > budget.max) controller.error(new ResponseTooLargeError(url, budget.max));
        else controller.enqueue(chunk);
      },
    }),
  );
  const limited = new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  Object.defineProperty(limited, 'url', { value: url });
  return limited;
}

/** `fetchImpl` whose answers are limited to `limit` each, or together by a `ByteBudget` (limitBody). */
export function limitedFetch(fetchImpl: typeof fetch, limit: number | ByteBudget): typeof fetch {
  return async (input, init) => limitBody(await fetchImpl(input, init), limit);
}
