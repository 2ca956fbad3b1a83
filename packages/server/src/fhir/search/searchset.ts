import type { FoundResource } from '../../store/types.ts';
import type { FhirContext } from '../context.ts';
import { hierarchiesOf } from './code-hierarchy.ts';
import { filterLeafParams } from './filter-param.ts';
import { listsOf } from './list-members.ts';
import { type ParsedSearch, parseSearch } from './parse.ts';
import { chainsInScope } from './restrictions.ts';
import { elementsOnly, summarize } from './subset.ts';
import { valueSetsOf } from './value-set-in.ts';

/**
 * A search's parameters parsed together with what they name in the vault: the ValueSets of `:in`, the Lists of
 * `_list`, the hierarchies of `:below` / `:above` (read first, so that parsing itself stays synchronous).
 */
export async function parseVaultSearch(
  ctx: FhirContext,
  type: string,
  params: [string, string][],
  strict: boolean,
): Promise<ParsedSearch> {
  // `_filter`'s comparisons name ValueSets and hierarchies as the ordinary parameters do.
  const named = params.some(([name]) => name === '_filter') ? [...params, ...filterLeafParams(type, params)] : params;
  const valueSets = await valueSetsOf(ctx, type, named);
  const lists = await listsOf(ctx, type, params);
  const hierarchies = await hierarchiesOf(ctx, type, named);
  const parsed = parseSearch(type, params, { base: ctx.base, strict, valueSets, lists, hierarchies });
  return { ...parsed, query: { ...parsed.query, filters: chainsInScope(ctx.access, ctx.base, parsed.query.filters) } };
}

export type EntryMode = 'match' | 'include';

/** A searchset entry's JSON text: a match cut as `_summary` / `_elements` ask, an included resource whole. */
export function searchsetEntry(
  ctx: FhirContext,
  parsed: Partial<Pick<ParsedSearch, 'summary' | 'elements'>>,
): (r: FoundResource, mode: EntryMode) => string {
  const subset = (r: FoundResource, mode: EntryMode) => {
    if (mode !== 'match') return r.content;
    if (parsed.elements) return elementsOnly(r.content, r.type, parsed.elements);
    return parsed.summary ? summarize(r.content, r.type, parsed.summary) : r.content;
  };
  return (r, mode) =>
    `{"fullUrl":${JSON.stringify(`${ctx.base}/${r.type}/${r.id}`)},"resource":${subset(r, mode)},"search":{"mode":"${mode}"}}`;
}

/** A searchset Bundle's JSON text (FHIR JSON has no empty arrays: without entries it has no `entry`). */
export function searchsetJson(
  total: number | undefined,
  links: { relation: string; url: string }[],
  entries: string[],
): string {
  const totalJson = total !== undefined ? `,"total":${total}` : '';
  const entryJson = entries.length ? `,"entry":[${entries.join(',')}]` : '';
  return `{"resourceType":"Bundle","type":"searchset"${totalJson},"link":${JSON.stringify(links)}${entryJson}}`;
}
