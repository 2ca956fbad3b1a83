import type { FoundResource, SizedResource } from '../../store/types.ts';
import { decide } from '../../vault/policy.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { includedTooLarge } from '../response-size.ts';
import type { IncludeDirective } from './parse.ts';
import { restrictionFilter } from './restrictions.ts';

const MAX_INCLUDED = 1000;
const MAX_ITERATIONS = 4;

/**
 * The resources `directives` bring in for `matches` (`_include`, `_revinclude`, `:iterate`, `$everything`'s
 * references), each passing the scope checks of a read; `keep` narrows them by type before they are read-checked
 * and counted against MAX_INCLUDED. Together they may hold `room` characters: past it the page is refused
 * (too-costly) before the contents of large ones are read, so 1,000 included documents of megabytes each are never
 * in memory at once.
 */
export async function resolveIncludes(
  ctx: FhirContext,
  matches: FoundResource[],
  directives: IncludeDirective[],
  o: { room: number; keep?: (type: string) => boolean },
): Promise<FoundResource[]> {
  if (directives.length === 0 || matches.length === 0) return [];
  const keep = o.keep ?? (() => true);
  const key = (r: { type: string; id: string }) => `${r.type}/${r.id}`;
  const seen = new Set(matches.map(key));
  const included: SizedResource[] = [];
  let bytes = 0;
  const decisions = new Map<string, ReturnType<typeof decide>>();
  const decisionFor = (type: string) => {
    let d = decisions.get(type);
    if (!d) {
      d = decide(ctx.access, type, 'read');
      decisions.set(type, d);
    }
    return d;
  };
  /** Included resources pass the same scope checks as reads: denied types drop out, restricted ones are filtered. */
  const readable = async (candidates: SizedResource[]): Promise<SizedResource[]> => {
    const byType = new Map<string, SizedResource[]>();
    for (const r of candidates) {
      const list = byType.get(r.type);
      if (list) list.push(r);
      else byType.set(r.type, [r]);
    }
    const out: SizedResource[] = [];
    for (const [type, list] of byType) {
      const d = decisionFor(type);
      if (!d.allowed) continue;
      const filter = restrictionFilter(ctx, type, d.restrictions);
      if (!filter) {
        for (const r of list) out.push(r);
        continue;
      }
      // In slices: an id list is one statement parameter each.
      for (let i = 0; i < list.length; i += 500) {
        const slice = list.slice(i, i + 500);
        const { matches: visible, more } = await ctx.store.resources.search(ctx.partition, {
          type,
          filters: [{ kind: 'id', ids: slice.map((r) => r.id) }, filter],
          sort: [],
          limit: slice.length,
          offset: 0,
          total: false,
          maxBytes: o.room,
        });
        if (more) throw includedTooLarge(ctx);
        for (const r of visible) out.push({ type: r.type, id: r.id, content: r.content, size: r.content.length });
      }
    }
    return out;
  };
  /**
   * What the round's directives bring in for `frontier`: at most `cap` rows per lookup when given; without a cap
   * their sizes alone (there may be a vault's worth of them, and only the contents kept are read).
   */
  const lookup = async (active: IncludeDirective[], frontier: { type: string; id: string }[], cap?: number) => {
    const found: SizedResource[] = [];
    let capped = false;
    const bound = cap === undefined ? { contents: false } : { limit: cap };
    const add = (rows: SizedResource[]) => {
      if (cap !== undefined && rows.length >= cap) capped = true;
      for (const r of rows) found.push(r);
    };
    for (const d of active) {
      // What the token may not read, or the caller does not keep, is not looked up at all.
      const named = d.reverse ? d.sourceType : d.targetType;
      if (named && named !== '*' && !(keep(named) && decisionFor(named).allowed)) continue;
      // `*` (search.html#include): any source type, any reference parameter.
      const param = d.param === '*' ? undefined : d.param;
      if (d.reverse) {
        const source = d.sourceType === '*' ? undefined : d.sourceType;
        add(await ctx.store.resources.referencing(ctx.partition, source, param, frontier, bound));
        continue;
      }
      const sources = d.sourceType === '*' ? [...new Set(frontier.map((r) => r.type))] : [d.sourceType];
      for (const source of sources) {
        const ids = frontier.filter((r) => r.type === source).map((r) => r.id);
        if (ids.length)
          add(await ctx.store.resources.referencedBy(ctx.partition, source, ids, param, d.targetType, bound));
      }
    }
    return { found, capped };
  };
  /** The readable resources of `found` not seen before; too-costly when they are more than the rest allows. */
  const freshOf = async (found: SizedResource[]) => {
    const fresh = new Map<string, SizedResource>();
    const unseen = found.filter((r) => !seen.has(key(r)) && keep(r.type));
    for (const r of await readable(unseen)) {
      fresh.set(key(r), r);
      if (included.length + fresh.size > MAX_INCLUDED) {
        throw new FhirError(
          400,
          'too-costly',
          `more than ${MAX_INCLUDED} included resources; narrow the search or lower _count`,
        );
      }
    }
    return [...fresh.values()];
  };
  let frontier: { type: string; id: string }[] = matches;
  for (let round = 0; round <= MAX_ITERATIONS && frontier.length > 0; round++) {
    const active = directives.filter((d) => (round === 0 ? true : d.iterate));
    // A lookup needs no more rows than could all be new (a patient's 50,000 Observations are not read to learn
    // that they are more than 1,000): past the rest, plus those that may be seen already, plus one. Only when a
    // capped lookup did not settle it (most of its rows seen or not readable) is the round read in full.
    const cap = MAX_INCLUDED - included.length + seen.size + 1;
    const first = await lookup(active, frontier, cap);
    let fresh = await freshOf(first.found);
    if (first.capped) fresh = await freshOf((await lookup(active, frontier)).found);
    for (const r of fresh) {
      seen.add(key(r));
      bytes += r.size;
    }
    if (bytes > o.room) throw includedTooLarge(ctx);
    included.push(...fresh);
    frontier = fresh;
  }
  return withContents(ctx, included);
}

/** The included resources with the contents the lookups left unread; one deleted since is left out. */
async function withContents(ctx: FhirContext, included: SizedResource[]): Promise<FoundResource[]> {
  const large = new Map<string, string[]>();
  for (const r of included) {
    if (r.content !== null) continue;
    const ids = large.get(r.type);
    if (ids) ids.push(r.id);
    else large.set(r.type, [r.id]);
  }
  const contents = new Map<string, string>();
  for (const [type, ids] of large) {
    for (let i = 0; i < ids.length; i += 500) {
      const slice = ids.slice(i, i + 500);
      const { matches } = await ctx.store.resources.search(ctx.partition, {
        type,
        filters: [{ kind: 'id', ids: slice }],
        sort: [],
        limit: slice.length,
        offset: 0,
        total: false,
      });
      for (const r of matches) contents.set(`${type}/${r.id}`, r.content);
    }
  }
  return included.flatMap((r) => {
    const content = r.content ?? contents.get(`${r.type}/${r.id}`);
    return content === undefined ? [] : [{ type: r.type, id: r.id, content }];
  });
}
