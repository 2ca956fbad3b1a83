import type { FoundResource, SearchQuery, SearchResult } from '../../store/types.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { fitting, responseLimit } from '../response-size.ts';
import { badCursor, packCursor, unpackCursor } from './cursor.ts';

/** Where a page of a search over several types starts: a type of the walk, the position in it, the matches before. */
export type WalkPosition = { type: string; after?: SearchQuery['after']; before: number };

/** The matches of one type of the walk, from `after` on in (lastUpdated, id) order: `limit` rows, `maxBytes`. */
export type FindOfType = (
  type: string,
  limit: number,
  after?: SearchQuery['after'],
  maxBytes?: number,
) => Promise<SearchResult>;

export interface WalkPage {
  matches: FoundResource[];
  /** Where the next page starts, when there is one. */
  next: WalkPosition | undefined;
  /** Matches on the pages before this one. */
  before: number;
}

/**
 * One page of a search over several types (`$everything`, a system search): the types in a fixed order, each in
 * (lastUpdated, id) order, `count` matches at most. A page also ends where its answer would pass the response
 * limit; its `next` position goes on from there, at any depth, since positions are keys, not offsets.
 */
export async function walkTypes(
  ctx: FhirContext,
  types: readonly string[],
  find: FindOfType,
  count: number,
  position: WalkPosition | undefined,
): Promise<WalkPage> {
  const start = position ? types.indexOf(position.type) : 0;
  if (start < 0) throw new FhirError(400, 'invalid', '_cursor is not a cursor of this search');
  const matches: FoundResource[] = [];
  let next: WalkPosition | undefined;
  let i = start;
  let bytes = 0;
  let full = false;
  for (; i < types.length && matches.length < count && !full; i++) {
    const type = types[i] as string;
    const room = count - matches.length;
    // The store reads no more than fits (and one more, to tell whether this type goes on); fitting() cuts that one.
    const found = await find(type, room + 1, i === start ? position?.after : undefined, responseLimit(ctx) - bytes);
    const rows = found.matches;
    const sizes = rows.slice(0, room).map((r) => r.content.length);
    const taken = fitting(sizes, responseLimit(ctx) - bytes, matches.length === 0);
    full = taken < sizes.length || found.more === true;
    for (const r of rows.slice(0, taken)) {
      matches.push(r);
      bytes += r.content.length;
    }
    const last = matches[matches.length - 1];
    if ((rows.length > taken || found.more) && last?.type === type && last.lastUpdated)
      next = { type, after: { lastUpdated: last.lastUpdated, id: last.id }, before: 0 };
    // Nothing of this type fitted after the earlier types' matches: the next page starts where this one did.
    else if (full) next = { type, ...(i === start && position?.after ? { after: position.after } : {}), before: 0 };
  }
  // A page that ends with its type: the next one starts at the next type that has anything, if any does.
  for (; !next && matches.length === count && i < types.length; i++) {
    if ((await find(types[i] as string, 1)).matches.length > 0) next = { type: types[i] as string, before: 0 };
  }
  const before = position?.before ?? 0;
  if (next) next.before = before + matches.length;
  return { matches, next, before };
}

export function encodeWalkPosition(p: WalkPosition): string {
  return packCursor([p.type, p.after?.lastUpdated ?? null, p.after?.id ?? null, p.before]);
}

export function decodeWalkPosition(value: string): WalkPosition {
  const [type, lastUpdated, id, before] = unpackCursor(value, 4);
  const placed = typeof lastUpdated === 'string' && typeof id === 'string';
  if (typeof type !== 'string' || !Number.isSafeInteger(before) || (before as number) < 0) throw badCursor();
  if (!placed && (lastUpdated !== null || id !== null)) throw badCursor();
  return { type, ...(placed ? { after: { lastUpdated, id } } : {}), before: before as number };
}
