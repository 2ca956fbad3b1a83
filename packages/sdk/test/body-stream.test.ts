import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LineTooLongError, textLines } from '../src/body-stream.ts';

// The NDJSON line reader of bulk export downloads: lines split anywhere across chunks (also inside a UTF-8
// character), and a line past the limit refused, however the chunks fall.
async function* chunks(...parts: (string | Uint8Array)[]) {
  for (const p of parts) yield typeof p === 'string' ? new TextEncoder().encode(p) : p;
}
const lines = async (max: number, ...parts: (string | Uint8Array)[]) => {
  const out: string[] = [];
  for await (const l of textLines(chunks(...parts), max)) out.push(l);
  return out;
};

test('lines across chunks, a character split between chunks, empty lines, a last line without its end', async () => {
  const euro = new TextEncoder().encode('€'); // three bytes
  assert.deepEqual(await lines(100, '{"a":1}\n{"b"', ':2}\n\n', euro.subarray(0, 1), euro.subarray(1), 'x\nlast'), [
    '{"a":1}',
    '{"b":2}',
    '',
    '€x',
    'last',
  ]);
  assert.deepEqual(await lines(100, 'one\n'), ['one']);
  assert.deepEqual(await lines(100), []);
});

test('a line of exactly the limit passes; one character more is refused by its number, wherever the chunks fall', async () => {
  assert.deepEqual(await lines(5, 'ab', 'cde\nfg'), ['abcde', 'fg']);
  for (const parts of [['ok\nabcdef\n'], ['ok\nab', 'cd', 'ef', '\n'], ['ok\nabcdef']]) {
    await assert.rejects(lines(5, ...parts), (err: unknown) => {
      assert.ok(err instanceof LineTooLongError);
      assert.equal(err.line, 2);
      return true;
    });
  }
});

test('a long line in many small chunks comes out whole', async () => {
  const chunk = 'x'.repeat(16 * 1024);
  const count = 1024; // 16 M characters
  const [line] = await lines(32 * 1024 * 1024, ...Array.from({ length: count }, () => chunk), '\n');
  assert.equal(line?.length, chunk.length * count);
  assert.ok(/^x+$/.test(line as string));
});
