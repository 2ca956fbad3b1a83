import type { SearchFilter, TokenCond } from '../../store/types.ts';
import { canonicalReader, findCanonical } from '../canonical.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { searchParam } from './definitions.ts';
import { splitValues } from './value-parsers.ts';

/**
 * `:in` and `:not-in` on a token (R4 search.html#modifiers): the codes of a ValueSet stored in the same vault,
 * named by its canonical `url` (with `|version` when several versions are stored) or as `ValueSet/[id]`.
 * Enumerated codes only — an `expansion`, or a `compose` of concepts and of other such ValueSets; a filter or a
 * whole code system needs a terminology server, which this server is not. Resolved before the search is parsed,
 * so that parsing stays synchronous: the map goes to parseSearch as `valueSets`.
 */
export type ValueSetCodes = Map<string, TokenCond[]>;

/** Codes one search may take from its ValueSets: each is one OR-ed condition of its SQL. */
export const MAX_VALUE_SET_CODES = 1000;
const MAX_IMPORT_DEPTH = 3;
/** ValueSets one search may read, imports included: a ValueSet of many imports must not become many lookups. */
const MAX_LOOKUPS = 50;

/** What expanding needs: where to look, what the caller may see there, how many lookups are left. */
interface Lookup {
  ctx: FhirContext;
  visible: SearchFilter | undefined;
  left: number;
}

type Obj = Record<string, unknown>;
type Concept = { system: string; code: string };
const key = (c: Concept) => `${c.system}|${c.code}`;

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
  const lookup: Lookup = { ctx, visible: canonicalReader(ctx, 'ValueSet', ':in / :not-in'), left: MAX_LOOKUPS };
  let total = 0;
  for (const name of named) {
    const codes = [...(await expand(lookup, name, 0)).values()];
    if (codes.length === 0) throw invalid(`ValueSet ${name} has no codes`);
    total += codes.length;
    if (total > MAX_VALUE_SET_CODES) {
      throw new FhirError(400, 'too-costly', `:in and :not-in take up to ${MAX_VALUE_SET_CODES} codes in one search`);
    }
    out.set(name, codes);
  }
  return out;
}

const invalid = (message: string) => new FhirError(400, 'invalid', message);
const unsupported = (name: string, what: string) =>
  new FhirError(400, 'not-supported', `ValueSet ${name} ${what}: that needs a terminology server`);

function find(lookup: Lookup, name: string): Promise<Obj> {
  if (lookup.left-- <= 0) {
    throw new FhirError(400, 'too-costly', `:in and :not-in read up to ${MAX_LOOKUPS} ValueSets in one search`);
  }
  return findCanonical(lookup.ctx, 'ValueSet', name, lookup.visible);
}

async function expand(lookup: Lookup, name: string, depth: number): Promise<Map<string, Concept>> {
  if (depth > MAX_IMPORT_DEPTH) throw invalid(`ValueSet ${name}: imports nest more than ${MAX_IMPORT_DEPTH} deep`);
  const vs = await find(lookup, name);
  const codes = new Map<string, Concept>();
  const expansion = vs.expansion as Obj | undefined;
  if (Array.isArray(expansion?.contains)) {
    const walk = (entries: Obj[]) => {
      for (const e of entries) {
        if (typeof e.system === 'string' && typeof e.code === 'string' && e.abstract !== true) {
          codes.set(key(e as Concept), { system: e.system, code: e.code });
        }
        if (Array.isArray(e.contains)) walk(e.contains as Obj[]);
        if (codes.size > MAX_VALUE_SET_CODES) return;
      }
    };
    walk(expansion.contains as Obj[]);
    return codes;
  }
  const compose = vs.compose as { include?: Obj[]; exclude?: Obj[] } | undefined;
  if (!Array.isArray(compose?.include)) throw unsupported(name, 'has neither an expansion nor a compose');
  for (const part of compose.include) {
    for (const c of (await selected(lookup, name, part, depth)).values()) codes.set(key(c), c);
    if (codes.size > MAX_VALUE_SET_CODES) return codes;
  }
  for (const part of compose.exclude ?? []) {
    for (const k of (await selected(lookup, name, part, depth)).keys()) codes.delete(k);
  }
  return codes;
}

/**
 * The codes one include or exclude selects (valueset.html#compose): its concepts of its system; the codes of
 * every ValueSet it imports (an intersection when there are several); both at once, the intersection of both.
 */
async function selected(lookup: Lookup, name: string, part: Obj, depth: number): Promise<Map<string, Concept>> {
  if (Array.isArray(part.filter) && part.filter.length > 0) throw unsupported(name, 'selects codes by a filter');
  let set: Map<string, Concept> | undefined;
  if (Array.isArray(part.concept) && part.concept.length > 0) {
    if (typeof part.system !== 'string') throw invalid(`ValueSet ${name}: concepts without their system`);
    set = new Map();
    for (const c of part.concept as Obj[]) {
      if (typeof c.code === 'string')
        set.set(key({ system: part.system, code: c.code }), { system: part.system, code: c.code });
    }
  } else if (typeof part.system === 'string') {
    throw unsupported(name, `includes all of ${part.system}`);
  }
  for (const imported of (part.valueSet as unknown[] | undefined) ?? []) {
    if (typeof imported !== 'string') throw invalid(`ValueSet ${name}: an import that is not a canonical URL`);
    const codes = await expand(lookup, imported, depth + 1);
    set = set === undefined ? codes : new Map([...set].filter(([k]) => codes.has(k)));
  }
  if (set === undefined) throw invalid(`ValueSet ${name}: an include or exclude with no system and no valueSet`);
  return set;
}
