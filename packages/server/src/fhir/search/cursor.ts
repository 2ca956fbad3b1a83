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

export function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify([c.offset, c.after.lastUpdated, c.after.id])).toString('base64url');
}

export function decodeCursor(value: string): Cursor {
  const invalid = () => bad('_cursor is not a position this server wrote');
  if (value.length > 200 || !/^[A-Za-z0-9_-]+$/.test(value)) throw invalid();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(value, 'base64url').toString('utf8'));
  } catch {
    throw invalid();
  }
  if (!Array.isArray(parsed) || parsed.length !== 3) throw invalid();
  const [offset, lastUpdated, id] = parsed as unknown[];
  if (!Number.isSafeInteger(offset) || (offset as number) < 0) throw invalid();
  if (typeof lastUpdated !== 'string' || !INSTANT.test(lastUpdated) || Number.isNaN(Date.parse(lastUpdated))) {
    throw invalid();
  }
  if (typeof id !== 'string' || !ID_RE.test(id)) throw invalid();
  return { offset: offset as number, after: { lastUpdated, id } };
}
