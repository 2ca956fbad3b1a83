import type { SearchFilter, TokenCond } from '../../store/types.ts';
import { FhirError } from '../errors.ts';

/**
 * `:below` and `:above` on a token (R4 search.html#modifiers): the code and what it subsumes, or what subsumes it,
 * in the is-a hierarchy of a CodeSystem the vault holds. Read before the search is parsed
 * (search/code-hierarchy.ts): each `modifier:system|code` maps to its codes.
 */
export type HierarchyCodes = Map<string, TokenCond[]>;

/** The filter of `code:below` / `code:above`; `codes` is there only at the top of a search. */
export function hierarchyFilter(
  code: string,
  modifier: 'below' | 'above',
  values: string[],
  codes: HierarchyCodes | undefined,
): SearchFilter {
  const found = values.map((v) => codes?.get(`${modifier}:${v}`));
  if (found.some((f) => f === undefined)) {
    throw new FhirError(
      400,
      'not-supported',
      `${code}:${modifier} is answered at the top of a search only (not in a chain, _has, a condition or a scope)`,
    );
  }
  return { kind: 'token', param: code, values: found.flat() as TokenCond[], not: false };
}
