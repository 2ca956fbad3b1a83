import { TransportError } from './errors.js';

/** Starts and stops the timer that aborts a download when no byte arrives for a while. */
export interface IdleTimer {
  arm(): void;
  stop(): void;
}

/**
 * A response body chunk by chunk. The idle timer runs only while a chunk is awaited, so a slow consumer is never
 * taken for a silent server; a connection lost or timed out mid-body is a `TransportError`.
 */
export async function* bodyChunks(res: Response, url: string, idle?: IdleTimer): AsyncGenerator<Uint8Array> {
  const reader = res.body?.getReader();
  try {
    for (;;) {
      if (!reader) return;
      let next: ReadableStreamReadResult<Uint8Array>;
      idle?.arm();
      try {
        next = await reader.read();
      } catch (err) {
        const reason = (err as Error).name === 'TimeoutError' ? 'timeout' : (err as Error).message;
        throw new TransportError(`GET ${url} broke off: ${reason}`, undefined, { cause: err });
      } finally {
        idle?.stop();
      }
      if (next.done) return;
      yield next.value;
    }
  } finally {
    // A consumer that stops early (or an error) releases the connection.
    await reader?.cancel().catch(() => {});
  }
}

/** A line longer than `textLines` was allowed to hold, by its number (from 1). */
export class LineTooLongError extends Error {
  constructor(
    readonly line: number,
    readonly maxChars: number,
  ) {
    super(`line ${line} is longer than ${maxChars} characters`);
  }
}

/**
 * Text lines of a UTF-8 byte stream (without their `\n`; a last line without one is a line too). A line is held
 * until its end arrives, so one longer than `maxChars` (a server sending no line ends, or without end) is
 * refused with `LineTooLongError` rather than held until memory runs out.
 */
export async function* textLines(chunks: AsyncIterable<Uint8Array>, maxChars: number): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let rest = '';
  let line = 1;
  for await (const chunk of chunks) {
    rest += decoder.decode(chunk, { stream: true });
    let start = 0;
    for (let end = rest.indexOf('\n'); end >= 0; end = rest.indexOf('\n', start)) {
      if (end - start > maxChars) throw new LineTooLongError(line, maxChars);
      yield rest.slice(start, end);
      line++;
      start = end + 1;
    }
    rest = rest.slice(start);
    if (rest.length > maxChars) throw new LineTooLongError(line, maxChars);
  }
  rest += decoder.decode();
  if (rest.length > maxChars) throw new LineTooLongError(line, maxChars);
  if (rest) yield rest;
}
