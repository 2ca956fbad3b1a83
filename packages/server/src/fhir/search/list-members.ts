import { canonicalReader } from '../canonical.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { ID_RE } from '../resource-types.ts';
import type { ListMembers } from './list-filter.ts';
import { splitValues } from './value-parsers.ts';
import { relativeReference } from './values.ts';

/** What one search may take from its Lists: each id is a term of the statement. */
export const MAX_LIST_ITEMS = 1000;

/**
 * The Lists a search names in `_list`, read as the caller (List read needed, else 403): each value named maps
 * to the ids of the searched type among the List's current entries. Missing is 400, as for `:in`.
 */
export async function listsOf(ctx: FhirContext, type: string, params: [string, string][]): Promise<ListMembers> {
  const named = new Set<string>();
  for (const [name, value] of params) if (name === '_list') for (const v of splitValues(value)) named.add(v);
  const out: ListMembers = new Map();
  if (named.size === 0) return out;
  const visible = canonicalReader(ctx, 'List', '_list');
  let total = 0;
  for (const name of named) {
    if (name.startsWith('$')) {
      throw new FhirError(400, 'not-supported', `_list=${name}: functional lists are not kept; name a List by its id`);
    }
    const id = name.startsWith('List/') ? name.slice('List/'.length) : name;
    if (!ID_RE.test(id)) throw new FhirError(400, 'invalid', `_list=${name}: not the id of a List`);
    const { matches } = await ctx.store.resources.search(ctx.partition, {
      type: 'List',
      filters: [{ kind: 'id', ids: [id] }, ...(visible ? [visible] : [])],
      sort: [],
      limit: 1,
      offset: 0,
      total: false,
    });
    const found = matches[0] as { content: string } | undefined;
    if (!found) throw new FhirError(400, 'invalid', `_list: no List ${id} in this vault`);
    const ids = membersOf(ctx, JSON.parse(found.content), type);
    total += ids.length;
    if (total > MAX_LIST_ITEMS) {
      throw new FhirError(400, 'too-costly', `_list takes up to ${MAX_LIST_ITEMS} entries in one search`);
    }
    out.set(name, ids);
  }
  return out;
}

/** The ids of `type` a List holds now: entries marked deleted have left it; another server's are not here. */
function membersOf(ctx: FhirContext, list: { entry?: unknown }, type: string): string[] {
  const ids = new Set<string>();
  for (const entry of Array.isArray(list.entry) ? list.entry : []) {
    const e = entry as { deleted?: unknown; item?: { reference?: unknown } } | null;
    if (e?.deleted === true || typeof e?.item?.reference !== 'string') continue;
    const ref = e.item.reference;
    const rel = relativeReference(ref.startsWith(`${ctx.base}/`) ? ref.slice(ctx.base.length + 1) : ref);
    if (rel?.type === type) ids.add(rel.id);
  }
  return [...ids];
}
