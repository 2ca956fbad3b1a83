import type { SearchFilter } from '../../store/types.ts';
import { FhirError } from '../errors.ts';

/**
 * `_list` (R4 search.html#list): the matches are the resources a List of the same vault holds. The Lists are
 * read before the search is parsed (search/list-members.ts), like the ValueSets of `:in`, so that parsing stays
 * synchronous: each value named maps to the ids of the searched type among the List's entries.
 */
export type ListMembers = Map<string, string[]>;

/**
 * The filter of a `_list` parameter: the members of the Lists its values name (several values: any of them).
 * `lists` is there only at the top of a search; a chain, `_has`, a condition or a scope has none to offer.
 */
export function listFilter(
  modifier: string | undefined,
  values: string[],
  lists: ListMembers | undefined,
): SearchFilter {
  if (modifier) throw new FhirError(400, 'invalid', `_list:${modifier}: _list takes no modifier`);
  const members = values.map((v) => lists?.get(v));
  if (members.some((m) => m === undefined)) {
    throw new FhirError(
      400,
      'not-supported',
      '_list is answered at the top of a search only (not in a chain, _has, a condition or a scope)',
    );
  }
  return { kind: 'id', ids: [...new Set(members.flat() as string[])] };
}
