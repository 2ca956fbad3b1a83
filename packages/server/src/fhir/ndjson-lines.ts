/** A line past the limit, by its number (from 1). */
export class LineTooLong extends Error {
  constructor(
    readonly line: number,
    readonly maxBytes: number,
  ) {
    super(`line ${line} is longer than ${maxBytes} bytes`);
  }
}

/**
 * The lines of a byte stream (`\n` or `\r\n`), each decoded as UTF-8 once whole. readline holds a line however
 * long it grows, so one file without line ends, or a small gzip file that inflates to gigabytes, ran the
 * process out of memory or past V8's longest string; here a line past `maxBytes` throws `LineTooLong` before
 * more of it is held.
 */
export async function* boundedLines(input: AsyncIterable<Buffer | string>, maxBytes: number): AsyncGenerator<string> {
  let parts: Buffer[] = [];
  let held = 0;
  let line = 1;
  const take = (piece: Buffer) => {
    held += piece.length;
    if (held > maxBytes) throw new LineTooLong(line, maxBytes);
    if (piece.length) parts.push(piece);
  };
  const whole = () => {
    const text = Buffer.concat(parts).toString('utf8');
    parts = [];
    held = 0;
    line++;
    return text.endsWith('\r') ? text.slice(0, -1) : text;
  };
  for await (const data of input) {
    const chunk = typeof data === 'string' ? Buffer.from(data) : data;
    let start = 0;
    for (let end = chunk.indexOf(10); end >= 0; end = chunk.indexOf(10, start)) {
      take(chunk.subarray(start, end));
      start = end + 1;
      yield whole();
    }
    take(chunk.subarray(start));
  }
  if (held > 0) yield whole();
}
