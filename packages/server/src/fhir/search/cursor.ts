import type { PagePosition } from '../../store/types.ts';
import { ID_RE } from '../resource-types.ts';
import { bad } from './value-parsers.ts';

/**
 * `_cursor`: where the next page of a search in (last_updated, id) order starts, written by the server into
 * `next` links. A page found by position costs the same at any depth, where `_offset` walks every match before
 * it (and is capped); it also neither repeats nor skips a match when earlier ones are updated in between.
 * Opaque to clients: base64url of `[matches before the page, last_updated, id]` of the previous page's last match.
 */
export interface Cursor {
  after: PagePosition;
  /** How many matches precede the page: for `previous` links and the total on the last page. */
  offset: number;
}

// The form the server writes last_updated in (Date#toISOString).
const INSTANT = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** A `_cursor` that is not a position this server wrote there: 400. */
export const badCursor = () => bad('_cursor is not a position this server wrote');

/** A position as every `_cursor` of this server writes it (search, history, `$everything`): base64url JSON. */
export function packCursor(values: (string | number | null)[]): string {
  return Buffer.from(JSON.stringify(values)).toString('base64url');
}

/** The `length` values of a `_cursor` packCursor wrote; 400 for anything else (their types the caller checks). */
export function unpackCursor(value: string, length: number): unknown[] {
  if (value.length > 400 || !/^[A-Za-z0-9_-]+$/.test(value)) throw badCursor();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(value, 'base64url').toString('utf8'));
  } catch {
    throw badCursor();
  }
  if (!Array.isArray(parsed) || parsed.length !== length) throw badCursor();
  return parsed;
}

export function encodeCursor(c: Cursor): string {
  return packCursor([c.offset, c.after.lastUpdated, c.after.id]);
}

export function decodeCursor(value: string): Cursor {
  const [offset, lastUpdated, id] = unpackCursor(value, 3);
  if (!Number.isSafeInteger(offset) || (offset as number) < 0) throw badCursor();
  if (typeof lastUpdated !== 'string' || !INSTANT.test(lastUpdated) || Number.isNaN(Date.parse(lastUpdated))) {
    throw badCursor();
  }
  if (typeof id !== 'string' || !ID_RE.test(id)) throw badCursor();
  return { offset: offset as number, after: { lastUpdated, id } };
}
