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
 * refused with `LineTooLongError` rather than held until memory runs out. Each chunk is searched once: the part
 * of a line already held is kept in pieces, not searched again (searching it all on every chunk made a line of
 * 64 M characters take minutes).
 */
export async function* textLines(chunks: AsyncIterable<Uint8Array>, maxChars: number): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pieces: string[] = [];
  let held = 0;
  let line = 1;
  const hold = (piece: string) => {
    held += piece.length;
    if (held > maxChars) throw new LineTooLongError(line, maxChars);
    if (piece) pieces.push(piece);
  };
  const whole = () => {
    const text = pieces.length === 1 ? (pieces[0] as string) : pieces.join('');
    pieces = [];
    held = 0;
    line++;
    return text;
  };
  for await (const chunk of chunks) {
    const text = decoder.decode(chunk, { stream: true });
    let start = 0;
    for (let end = text.indexOf('\n'); end >= 0; end = text.indexOf('\n', start)) {
      hold(text.slice(start, end));
      start = end + 1;
      yield whole();
    }
    hold(text.slice(start));
  }
  hold(decoder.decode());
  if (held > 0) yield whole();
}
