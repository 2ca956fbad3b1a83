import type { SearchFilter } from '../store/types.ts';
import { findCanonical } from './canonical.ts';
import type { FhirContext } from './context.ts';

/**
 * The concepts of a CodeSystem stored in the vault (codesystem.html#concept), for `$lookup`, `$validate-code` and
 * the expansion of a ValueSet that includes a whole system. carevault is no terminology server: it knows the
 * CodeSystems a vault holds, as they are written.
 */
export interface Concept {
  code: string;
  display?: string;
  definition?: string;
  designation?: unknown[];
  property?: { code?: unknown; [value: string]: unknown }[];
  /** The code of the concept it is nested in, if any. */
  parent?: string;
  /** `notSelectable` (R4 concept-properties): a grouping, not a code to use. */
  abstract: boolean;
}

type Obj = Record<string, unknown>;

/** The CodeSystem with canonical `system` (and `version`) in this vault, as the caller may see it. */
export function findCodeSystem(
  ctx: FhirContext,
  visible: SearchFilter | undefined,
  system: string,
  version?: string,
): Promise<Obj> {
  return findCanonical(ctx, 'CodeSystem', version === undefined ? system : `${system}|${version}`, visible);
}

/** Every concept, nested ones after their parent. */
export function* conceptsOf(cs: Obj): Generator<Concept> {
  function* walk(concepts: unknown, parent: string | undefined): Generator<Concept> {
    if (!Array.isArray(concepts)) return;
    for (const c of concepts as Obj[]) {
      if (typeof c?.code !== 'string') continue;
      const property = Array.isArray(c.property) ? (c.property as Concept['property']) : undefined;
      yield {
        code: c.code,
        ...(typeof c.display === 'string' ? { display: c.display } : {}),
        ...(typeof c.definition === 'string' ? { definition: c.definition } : {}),
        ...(Array.isArray(c.designation) ? { designation: c.designation } : {}),
        ...(property ? { property } : {}),
        ...(parent === undefined ? {} : { parent }),
        abstract: property?.some((p) => p.code === 'notSelectable' && p.valueBoolean === true) ?? false,
      };
      yield* walk(c.concept, c.code);
    }
  }
  yield* walk(cs.concept, undefined);
}

/** The concept `code` names, compared as the CodeSystem says (`caseSensitive`; FHIR's default is unstated: exact). */
export function conceptOf(cs: Obj, code: string): Concept | undefined {
  const same =
    cs.caseSensitive === false ? (c: string) => c.toLowerCase() === code.toLowerCase() : (c: string) => c === code;
  for (const c of conceptsOf(cs)) if (same(c.code)) return c;
  return undefined;
}

/**
 * Each concept's parents in the CodeSystem's hierarchy: the concept it is nested in and its `parent` properties
 * (R4 concept-properties; a CodeSystem may say it either way).
 */
export function parentsOf(cs: Obj): Map<string, Set<string>> {
  const parents = new Map<string, Set<string>>();
  for (const c of conceptsOf(cs)) {
    const set = parents.get(c.code) ?? new Set<string>();
    if (c.parent !== undefined) set.add(c.parent);
    for (const p of c.property ?? []) if (p.code === 'parent' && typeof p.valueCode === 'string') set.add(p.valueCode);
    parents.set(c.code, set);
  }
  return parents;
}

/** Every ancestor of `code`, each once. */
export function ancestorsIn(parents: Map<string, Set<string>>, code: string, limit = Infinity): Set<string> {
  return reach(parents, code, limit);
}

/** Every concept below `code`, each once. */
export function descendantsIn(parents: Map<string, Set<string>>, code: string, limit = Infinity): Set<string> {
  const children = new Map<string, string[]>();
  for (const [child, of] of parents) {
    for (const p of of) {
      const list = children.get(p);
      if (list) list.push(child);
      else children.set(p, [child]);
    }
  }
  return reach(children, code, limit);
}

/**
 * The codes reached from `code` by the steps of `next` (to parents or to children); a cycle in a careless or
 * hostile CodeSystem ends at what was seen, and the walk stops once more than `limit` are found.
 */
function reach(next: Map<string, Iterable<string>>, code: string, limit: number): Set<string> {
  const seen = new Set<string>();
  const walk = [...(next.get(code) ?? [])];
  for (let c = walk.pop(); c !== undefined && seen.size <= limit; c = walk.pop()) {
    if (seen.has(c)) continue;
    seen.add(c);
    // One at a time: a spread of a code's 100,000 children would pass the engine's argument limit.
    for (const n of next.get(c) ?? []) walk.push(n);
  }
  return seen;
}
