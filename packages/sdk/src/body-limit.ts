import { ResponseTooLargeError } from './errors.js';

/** What a FhirClient accepts as one answer unless told otherwise: a page of large documents, not a flood. */
export const DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024;
/** Token, discovery and error answers: small by nature. */
export const SMALL_RESPONSE_BYTES = 1024 * 1024;

/**
 * The response with a body that fails with `ResponseTooLargeError` past `maxBytes` (by its Content-Length before
 * anything is read, else as the bytes arrive), and the connection given up: a broken or hostile server cannot
 * fill this process's memory, whoever reads the body (`json()`, `text()`, oauth4webapi).
 */
export function limitBody(res: Response, maxBytes: number): Response {
  const url = res.url;
  const declared = res.headers.get('content-length');
  if (declared !== null && Number(declared) > maxBytes) {
    res.body?.cancel().catch(() => {});
    throw new ResponseTooLargeError(url, maxBytes);
  }
  if (!res.body) return res;
  let size = 0;
  const body = res.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        size += chunk.byteLength;
        if (size > maxBytes) controller.error(new ResponseTooLargeError(url, maxBytes));
        else controller.enqueue(chunk);
      },
    }),
  );
  const limited = new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  Object.defineProperty(limited, 'url', { value: url });
  return limited;
}

/** `fetchImpl` whose answers are limited to `maxBytes` (limitBody). */
export function limitedFetch(fetchImpl: typeof fetch, maxBytes: number): typeof fetch {
  return async (input, init) => limitBody(await fetchImpl(input, init), maxBytes);
}
