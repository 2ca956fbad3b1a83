import type { SearchFilter } from '../store/types.ts';
import { canonicalReader, findCanonical, NoSuchCanonical } from './canonical.ts';
import { conceptsOf, findCodeSystem } from './code-system.ts';
import type { FhirContext } from './context.ts';
import { FhirError } from './errors.ts';
import { filterConcepts } from './value-set-filter.ts';

/**
 * The codes of a ValueSet stored in the vault (valueset.html#expansion), for `:in` / `:not-in` and `$expand`.
 * The ValueSet's `expansion` as it is, or else its `compose` — concepts of a system, all of a system whose
 * complete CodeSystem the vault holds or what filters select of it, and imported ValueSets, minus what `exclude`
 * selects. Another whole code system needs a terminology server, which carevault is not: 400 `not-supported`.
 */
export interface ExpandedCode {
  system: string;
  code: string;
  display?: string;
}

/** Codes one request may take from ValueSets: each is one OR-ed condition of a search's SQL. */
export const MAX_VALUE_SET_CODES = 1000;
const MAX_IMPORT_DEPTH = 3;
/** ValueSets one request may read, imports included: a ValueSet of many imports must not become many lookups. */
const MAX_LOOKUPS = 50;

/** Where a request looks ValueSets up: its vault, as the caller may see it there, with a budget of lookups. */
export interface ValueSetLookup {
  ctx: FhirContext;
  visible: SearchFilter | undefined;
  left: number;
  /** What needs the lookups: a caller that may not read the CodeSystems a ValueSet includes is told so (403). */
  what: string;
}

type Obj = Record<string, unknown>;
const key = (c: ExpandedCode) => `${c.system}|${c.code}`;
const invalid = (message: string) => new FhirError(400, 'invalid', message);
const unsupported = (name: string, what: string) =>
  new FhirError(400, 'not-supported', `ValueSet ${name} ${what}: that needs a terminology server`);

/** A request's lookups; `what` names what needs them, for the 403 of a caller that may not read ValueSets. */
export function valueSetLookup(ctx: FhirContext, what: string): ValueSetLookup {
  return { ctx, visible: canonicalReader(ctx, 'ValueSet', what), left: MAX_LOOKUPS, what };
}

/** The ValueSet `name` names (canonical url[|version], ValueSet/[id] or its absolute URL) and its codes. */
export async function expandValueSet(
  lookup: ValueSetLookup,
  name: string,
): Promise<{ valueSet: Obj; codes: ExpandedCode[] }> {
  const valueSet = await find(lookup, name);
  const codes = await codesOf(lookup, name, valueSet, 0);
  // Cut short, an expansion would say a wrong total and leave codes out of `:in` without a word.
  if (codes.size > MAX_VALUE_SET_CODES) {
    throw new FhirError(400, 'too-costly', `ValueSet ${name} has more than ${MAX_VALUE_SET_CODES} codes`);
  }
  return { valueSet, codes: [...codes.values()] };
}

function spend(lookup: ValueSetLookup): void {
  if (lookup.left-- <= 0) {
    throw new FhirError(
      400,
      'too-costly',
      `one request reads up to ${MAX_LOOKUPS} ValueSets and CodeSystems, imports included`,
    );
  }
}

function find(lookup: ValueSetLookup, name: string): Promise<Obj> {
  spend(lookup);
  return findCanonical(lookup.ctx, 'ValueSet', name, lookup.visible);
}

/**
 * The selectable codes of a system whose complete CodeSystem this vault holds: all of them, or those its
 * `filters` select (value-set-filter.ts).
 */
async function wholeSystem(lookup: ValueSetLookup, name: string, system: string, version: unknown, filters?: Obj[]) {
  spend(lookup);
  let cs: Obj;
  try {
    const visible = canonicalReader(lookup.ctx, 'CodeSystem', lookup.what);
    cs = await findCodeSystem(lookup.ctx, visible, system, typeof version === 'string' ? version : undefined);
  } catch (err) {
    if (err instanceof NoSuchCanonical)
      throw unsupported(
        name,
        `${filters ? 'filters' : 'includes all of'} ${system}, which this vault has no CodeSystem of`,
      );
    throw err;
  }
  if (cs.content !== 'complete') {
    throw unsupported(
      name,
      `${filters ? 'filters' : 'includes all of'} ${system}, whose CodeSystem here is not complete (content ${String(cs.content)})`,
    );
  }
  const set = new Map<string, ExpandedCode>();
  for (const c of filters ? filterConcepts(cs, filters, name) : conceptsOf(cs)) {
    if (c.abstract) continue;
    const code: ExpandedCode =
      c.display === undefined ? { system, code: c.code } : { system, code: c.code, display: c.display };
    set.set(key(code), code);
    if (set.size > MAX_VALUE_SET_CODES) break;
  }
  return set;
}

async function codesOf(lookup: ValueSetLookup, name: string, vs: Obj, depth: number) {
  const codes = new Map<string, ExpandedCode>();
  const add = (system: unknown, code: unknown, display: unknown) => {
    if (typeof system !== 'string' || typeof code !== 'string') return;
    const c: ExpandedCode = typeof display === 'string' ? { system, code, display } : { system, code };
    codes.set(key(c), c);
  };
  const expansion = vs.expansion as Obj | undefined;
  if (Array.isArray(expansion?.contains)) {
    const walk = (entries: Obj[]) => {
      for (const e of entries) {
        if (codes.size > MAX_VALUE_SET_CODES) return;
        if (e.abstract !== true) add(e.system, e.code, e.display);
        if (Array.isArray(e.contains)) walk(e.contains as Obj[]);
      }
    };
    walk(expansion.contains as Obj[]);
    return codes;
  }
  const compose = vs.compose as { include?: Obj[]; exclude?: Obj[] } | undefined;
  if (!Array.isArray(compose?.include)) throw unsupported(name, 'has neither an expansion nor a compose');
  for (const part of compose.include) {
    for (const c of (await selected(lookup, name, part, depth)).values()) add(c.system, c.code, c.display);
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
async function selected(lookup: ValueSetLookup, name: string, part: Obj, depth: number) {
  const filters = Array.isArray(part.filter) && part.filter.length > 0 ? (part.filter as Obj[]) : undefined;
  let set: Map<string, ExpandedCode> | undefined;
  if (filters) {
    // vsd-3: an include lists its concepts or filters the system, not both.
    if (typeof part.system !== 'string' || Array.isArray(part.concept))
      throw invalid(`ValueSet ${name}: a filter needs its system, and no concepts beside it`);
    set = await wholeSystem(lookup, name, part.system, part.version, filters);
  } else if (Array.isArray(part.concept) && part.concept.length > 0) {
    const system = part.system;
    if (typeof system !== 'string') throw invalid(`ValueSet ${name}: concepts without their system`);
    set = new Map();
    for (const c of part.concept as Obj[]) {
      if (typeof c.code !== 'string') continue;
      const code: ExpandedCode =
        typeof c.display === 'string' ? { system, code: c.code, display: c.display } : { system, code: c.code };
      set.set(key(code), code);
    }
  } else if (typeof part.system === 'string') {
    set = await wholeSystem(lookup, name, part.system, part.version);
  }
  for (const imported of (part.valueSet as unknown[] | undefined) ?? []) {
    if (typeof imported !== 'string') throw invalid(`ValueSet ${name}: an import that is not a canonical URL`);
    if (depth >= MAX_IMPORT_DEPTH) throw invalid(`ValueSet ${name}: imports nest more than ${MAX_IMPORT_DEPTH} deep`);
    const codes = await codesOf(lookup, imported, await find(lookup, imported), depth + 1);
    set = set === undefined ? codes : new Map([...set].filter(([k]) => codes.has(k)));
  }
  if (set === undefined) throw invalid(`ValueSet ${name}: an include or exclude with no system and no valueSet`);
  return set;
}
