import { ancestorsIn, type Concept, conceptsOf, descendantsIn, parentsOf } from './code-system.ts';
import { FhirError } from './errors.ts';

type Obj = Record<string, unknown>;
/** The hierarchy operators read `concept` (R4 filter-operator); `code` is taken as the same property. */
const HIERARCHY = new Set(['is-a', 'descendent-of', 'is-not-a', 'generalizes']);

/**
 * The concepts of a complete CodeSystem that every filter of a ValueSet include selects (valueset.html#compose,
 * R4 filter-operator): `is-a`, `descendent-of`, `is-not-a` and `generalizes` in its hierarchy (nesting and
 * `parent` properties); `=`, `in` and `not-in` on the code or on a property's value; `exists`. `regex` is not
 * evaluated (a pattern from a stored resource could take the server's thread for minutes): 400 `not-supported`.
 */
export function filterConcepts(cs: Obj, filters: Obj[], name: string): Concept[] {
  let concepts = [...conceptsOf(cs)];
  const parents = parentsOf(cs);
  for (const f of filters) {
    const { property, op, value } = f;
    if (typeof property !== 'string' || typeof op !== 'string' || typeof value !== 'string')
      throw new FhirError(400, 'invalid', `ValueSet ${name}: a filter needs its property, op and value`);
    const keep = test(property, op, value, parents, name);
    concepts = concepts.filter(keep);
  }
  return concepts;
}

function test(
  property: string,
  op: string,
  value: string,
  parents: Map<string, Set<string>>,
  name: string,
): (c: Concept) => boolean {
  const onCode = property === 'concept' || property === 'code';
  if (HIERARCHY.has(op)) {
    if (!onCode) throw unsupported(name, `filters ${property} by ${op}, which applies to concept only`);
    if (op === 'generalizes') {
      const up = ancestorsIn(parents, value);
      return (c) => c.code === value || up.has(c.code);
    }
    const below = descendantsIn(parents, value);
    if (op === 'descendent-of') return (c) => below.has(c.code);
    if (op === 'is-a') return (c) => c.code === value || below.has(c.code);
    return (c) => c.code !== value && !below.has(c.code);
  }
  const values = op === 'in' || op === 'not-in' ? value.split(',') : [value];
  const has = (c: Concept) => {
    const own = onCode ? [c.code] : (c.property ?? []).filter((p) => p.code === property).map(valueText);
    return own.some((v) => v !== undefined && values.includes(v));
  };
  switch (op) {
    case '=':
    case 'in':
      return has;
    case 'not-in':
      return (c) => !has(c);
    case 'exists': {
      if (value !== 'true' && value !== 'false') throw unsupported(name, `filters by exists=${value}`);
      const present = (c: Concept) => onCode || (c.property ?? []).some((p) => p.code === property);
      return value === 'true' ? present : (c) => !present(c);
    }
    default:
      throw unsupported(name, `filters by the operator ${op}`);
  }
}

/** A property's value as the text a filter compares it with (a code, string, boolean, number or Coding's code). */
function valueText(p: { [value: string]: unknown }): string | undefined {
  for (const [k, v] of Object.entries(p)) {
    if (!k.startsWith('value')) continue;
    if (typeof v === 'string' || typeof v === 'boolean' || typeof v === 'number') return String(v);
    if (typeof v === 'object' && v !== null && typeof (v as Obj).code === 'string') return (v as Obj).code as string;
  }
  return undefined;
}

const unsupported = (name: string, what: string) =>
  new FhirError(400, 'not-supported', `ValueSet ${name} ${what}: that needs a terminology server`);
