// Values written into SQL text as literals (the audit append's one-roundtrip statement): each must read on
// PostgreSQL exactly as the same value bound as a parameter — quotes, backslashes, array syntax and all.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { sqlLiteral } from '../src/store/postgres/literal.ts';
import { TEST_STORE } from './helpers/store.ts';

const { escapeLiteral, prepareValue } = createRequire(import.meta.url)('pg/lib/utils.js') as {
  escapeLiteral(s: string): string;
  prepareValue(v: unknown): unknown;
};

const STRINGS = [
  '',
  'plain',
  "it's",
  "''",
  'back\\slash',
  '\\x00',
  '\\',
  "\\'",
  '"quoted"',
  '{braced},comma',
  'NULL',
  ' spaced ',
  'é—😀',
  'line\nbreak\ttab',
];

/** Values of the shapes the audit append sends: text, numbers, and arrays of text, int8 and bytea. */
const VALUES: { value: unknown; cast: string }[] = [
  ...STRINGS.map((value) => ({ value, cast: 'text' })),
  { value: 1733300000000, cast: 'int8' },
  { value: STRINGS, cast: 'text[]' },
  { value: [...STRINGS, null], cast: 'text[]' },
  { value: [1, 2, 1733300000000], cast: 'int8[]' },
  { value: [Buffer.from([0, 1, 0x27, 0x5c, 0x22, 255]), null, Buffer.alloc(0)], cast: 'bytea[]' },
];

describe('SQL literals', () => {
  test("read as node-postgres' own escaping reads them", () => {
    for (const { value } of VALUES) {
      assert.equal(sqlLiteral(value), escapeLiteral(String(prepareValue(value))), JSON.stringify(value));
    }
    assert.equal(sqlLiteral(null), 'NULL');
    assert.equal(sqlLiteral(undefined), 'NULL');
  });

  describe('on PostgreSQL', { skip: TEST_STORE !== 'postgres' && 'PostgreSQL runs only' }, () => {
    let client: pg.Client;
    before(async () => {
      client = new pg.Client({ connectionString: process.env.CAREVAULT_TEST_DATABASE_URL });
      await client.connect();
    });
    after(async () => {
      await client?.end();
    });

    for (const standard of ['on', 'off']) {
      test(`equal the bound value (standard_conforming_strings ${standard})`, async () => {
        await client.query(`SET standard_conforming_strings TO ${standard}`);
        for (const { value, cast } of VALUES) {
          const { rows } = await client.query(
            `SELECT (${sqlLiteral(value)}::${cast} IS NOT DISTINCT FROM $1::${cast}) AS same`,
            [value],
          );
          assert.equal(rows[0]?.same, true, `${cast} ${JSON.stringify(value)}`);
        }
        await client.query('RESET standard_conforming_strings');
      });
    }
  });
});
