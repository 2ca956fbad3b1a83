import type { TokenCond } from '../../store/types.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { expandValueSet, MAX_VALUE_SET_CODES, valueSetLookup } from '../value-set-expansion.ts';
import { searchParam } from './definitions.ts';
import { splitValues } from './value-parsers.ts';

/**
 * `:in` and `:not-in` on a token (R4 search.html#modifiers): the codes of a ValueSet stored in the same vault
 * (fhir/value-set-expansion.ts). Resolved before the search is parsed, so that parsing stays synchronous: the map
 * goes to parseSearch as `valueSets`.
 */
export type ValueSetCodes = Map<string, TokenCond[]>;

/**
 * The ValueSets a search on `type` names in `:in` / `:not-in` parameters, each expanded to its codes. A
 * parameter of `type` itself counts only if it is a token (another one is ignored or refused by the parse); one
 * in a chain or `_has` always counts.
 */
export async function valueSetsOf(ctx: FhirContext, type: string, params: [string, string][]): Promise<ValueSetCodes> {
  const named = new Set<string>();
  for (const [name, value] of params) {
    const m = /^([^.:]+):(in|not-in)$/.exec(name);
    if (m ? searchParam(type, m[1] as string)?.type !== 'token' : !/[.:].*:(in|not-in)$/.test(name)) continue;
    for (const v of splitValues(value)) named.add(v);
  }
  const out: ValueSetCodes = new Map();
  if (named.size === 0) return out;
  const lookup = valueSetLookup(ctx, ':in / :not-in');
  let total = 0;
  for (const name of named) {
    const { codes } = await expandValueSet(lookup, name);
    if (codes.length === 0) throw new FhirError(400, 'invalid', `ValueSet ${name} has no codes`);
    total += codes.length;
    if (total > MAX_VALUE_SET_CODES) {
      throw new FhirError(400, 'too-costly', `:in and :not-in take up to ${MAX_VALUE_SET_CODES} codes in one search`);
    }
    out.set(
      name,
      codes.map(({ system, code }) => ({ system, code })),
    );
  }
  return out;
}
