import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { boundedLines, LineTooLong } from '../src/fhir/ndjson-lines.ts';

// The line reader of `carevault import` (NDJSON) and `audit verify --file`: lines as they were written, however
// the bytes arrive, and a line past the limit refused before it is held whole.
async function linesOf(chunks: (Buffer | string)[], max = 1024): Promise<string[]> {
  const out: string[] = [];
  for await (const line of boundedLines(
    (async function* () {
      yield* chunks;
    })(),
    max,
  ))
    out.push(line);
  return out;
}

describe('boundedLines', () => {
  test('lines split anywhere, CRLF ends, a last line without an end, empty lines kept', async () => {
    assert.deepEqual(await linesOf(['{"a":1}\n{"b"', ':2}\r\n\n', '{"c":3}']), ['{"a":1}', '{"b":2}', '', '{"c":3}']);
    assert.deepEqual(await linesOf(['one\n']), ['one']);
    assert.deepEqual(await linesOf([]), []);
  });

  test('a character of several bytes split between two chunks comes out whole', async () => {
    const bytes = Buffer.from('{"name":"Zoë 🩺"}\n');
    for (let cut = 1; cut < bytes.length; cut++) {
      assert.deepEqual(await linesOf([bytes.subarray(0, cut), bytes.subarray(cut)]), ['{"name":"Zoë 🩺"}'], `${cut}`);
    }
  });

  test('a line of the limit passes; one byte more is refused with its number, from any chunking', async () => {
    assert.deepEqual(await linesOf(['ok\n', 'x'.repeat(8), '\n'], 8), ['ok', 'x'.repeat(8)]);
    for (const chunks of [
      ['ok\n', 'x'.repeat(9), '\n'],
      ['ok\nxxxx', 'xxxxx'],
      ['ok\n', 'xxx', 'xxx', 'xxx', 'yyy\n'],
    ]) {
      await assert.rejects(
        linesOf(chunks, 8),
        (err: Error) => err instanceof LineTooLong && err.line === 2 && err.maxBytes === 8,
        JSON.stringify(chunks),
      );
    }
  });
});
