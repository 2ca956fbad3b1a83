import type { TokenCond } from '../../store/types.ts';
import { canonicalReader, NoSuchCanonical } from '../canonical.ts';
import { ancestorsIn, conceptOf, descendantsIn, findCodeSystem, parentsOf } from '../code-system.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { MAX_VALUE_SET_CODES } from '../value-set-expansion.ts';
import { searchParam } from './definitions.ts';
import type { HierarchyCodes } from './hierarchy-filter.ts';
import { splitValues } from './value-parsers.ts';

const unsupported = (message: string) => new FhirError(400, 'not-supported', message);

/**
 * The codes of every `:below` / `:above` a search on `type` names on a token parameter of its own, as
 * `modifier:value` → codes: the code itself and the codes below (or above) it in the is-a hierarchy of the
 * CodeSystem of that system the vault holds (read as the caller: CodeSystem read needed). A system the vault has
 * no complete CodeSystem of needs a terminology server: 400, as for `:in`.
 */
export async function hierarchiesOf(
  ctx: FhirContext,
  type: string,
  params: [string, string][],
): Promise<HierarchyCodes> {
  const out: HierarchyCodes = new Map();
  let total = 0;
  for (const [name, value] of params) {
    const m = /^([^.:]+):(below|above)$/.exec(name);
    if (!m || searchParam(type, m[1] as string)?.type !== 'token') continue;
    const modifier = m[2] as 'below' | 'above';
    for (const v of splitValues(value)) {
      const key = `${modifier}:${v}`;
      if (out.has(key)) continue;
      const codes = await related(ctx, name, modifier, v);
      total += codes.length;
      if (total > MAX_VALUE_SET_CODES) {
        throw new FhirError(
          400,
          'too-costly',
          `:below and :above take up to ${MAX_VALUE_SET_CODES} codes in one search`,
        );
      }
      out.set(key, codes);
    }
  }
  return out;
}

async function related(
  ctx: FhirContext,
  name: string,
  modifier: 'below' | 'above',
  value: string,
): Promise<TokenCond[]> {
  const bar = value.indexOf('|');
  if (bar <= 0 || bar === value.length - 1)
    throw new FhirError(400, 'invalid', `${name} takes system|code, not "${value}"`);
  const system = value.slice(0, bar);
  const code = value.slice(bar + 1);
  let cs: Record<string, unknown>;
  try {
    cs = await findCodeSystem(ctx, canonicalReader(ctx, 'CodeSystem', `${name}`), system);
  } catch (err) {
    if (err instanceof NoSuchCanonical) {
      throw unsupported(
        `${name}: this vault has no CodeSystem ${system}, and a hierarchy it does not hold needs a terminology server`,
      );
    }
    throw err;
  }
  if (cs.content !== 'complete')
    throw unsupported(`${name}: the CodeSystem ${system} here is not complete (content ${String(cs.content)})`);
  if (cs.hierarchyMeaning !== undefined && cs.hierarchyMeaning !== 'is-a') {
    throw unsupported(`${name}: the hierarchy of ${system} means ${String(cs.hierarchyMeaning)}, not is-a`);
  }
  const concept = conceptOf(cs, code);
  if (!concept) throw new FhirError(400, 'invalid', `${name}: code "${code}" is not in CodeSystem ${system}`);
  const parents = parentsOf(cs);
  const related = (modifier === 'above' ? ancestorsIn : descendantsIn)(parents, concept.code, MAX_VALUE_SET_CODES);
  const seen = new Set([concept.code, ...related]);
  return [...seen].map((c) => ({ system, code: c }));
}
