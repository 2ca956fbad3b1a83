import { createRequire } from 'node:module';
import { isDeepStrictEqual } from 'node:util';

/**
 * Plain accessors for the search expressions that are only a path (`Observation.component.code`,
 * `Patient.name`, `Observation.effective`): most of the R4 definitions are. fhirpath.js evaluates such a path by
 * wrapping every node it passes; walking the JSON directly gives the same values without that (issue 14 §3).
 * Each step must be an element the R4 model knows, so that choice elements (`effective` → `effectiveDateTime`,
 * `effectivePeriod`, …) are read the way fhirpath.js reads them; anything else is left to fhirpath.js.
 */
const require = createRequire(import.meta.url);
const model = require('fhirpath/fhir-context/r4') as {
  choiceTypePaths: Record<string, string[]>;
  path2Type: Record<string, string>;
  pathsDefinedElsewhere: Record<string, string>;
};

const TYPE = /^[A-Z][A-Za-z]+$/;
const NAME = /^[a-z][A-Za-z0-9]*$/;
const OF_TYPE = /^ofType\(([A-Za-z]+)\)$/;
/** Element types whose children are declared under the element's own path. */
const NESTED = new Set(['BackboneElement', 'Element']);

type Step = string[];

/** Splits `a.b.ofType(X).c` at its dots (no dot occurs inside an ofType argument). */
const names = (path: string): string[] => (path === '' ? [] : path.split('.'));

/**
 * The JSON keys each step reads, starting at the model path `from`, and the model path reached; undefined when
 * a step is not one the model can resolve. `ofType(X)` right after a choice element picks its one key.
 */
function resolve(from: string, parts: string[]): { steps: Step[]; at: string } | undefined {
  let at = from;
  let choice: { name: string; types: string[] } | undefined;
  const steps: Step[] = [];
  for (const part of parts) {
    const ofType = OF_TYPE.exec(part);
    if (ofType) {
      const wanted = (ofType[1] as string).charAt(0).toUpperCase() + (ofType[1] as string).slice(1);
      if (!choice?.types.includes(wanted)) return undefined;
      steps[steps.length - 1] = [`${choice.name}${wanted}`];
      at = wanted;
      choice = undefined;
      continue;
    }
    // A step after an unresolved choice would need the chosen type: left to fhirpath.js.
    if (choice || !NAME.test(part)) return undefined;
    const path = `${at}.${part}`;
    const types = model.choiceTypePaths[path];
    if (types) {
      steps.push(types.map((t) => `${part}${t}`));
      choice = { name: part, types };
      continue;
    }
    const elementType = model.path2Type[path];
    if (!elementType) return undefined;
    steps.push([part]);
    at = model.pathsDefinedElsewhere[path] ?? (NESTED.has(elementType) ? path : elementType);
  }
  return { steps, at: choice ? '' : at };
}

function push(out: unknown[], value: unknown): void {
  if (value === undefined || value === null) return;
  if (Array.isArray(value)) {
    for (const v of value) if (v !== undefined && v !== null) out.push(v);
  } else out.push(value);
}

export type Accessor = ((node: unknown) => unknown[]) & { at: string };

function accessor(steps: Step[], at: string): Accessor {
  const fn = (node: unknown) => {
    let nodes: unknown[] = [node];
    for (const step of steps) {
      const next: unknown[] = [];
      for (const n of nodes) {
        if (typeof n !== 'object' || n === null) continue;
        const o = n as Record<string, unknown>;
        for (const key of step) push(next, o[key]);
      }
      if (next.length === 0) return next;
      nodes = next;
    }
    return nodes;
  };
  return Object.assign(fn, { at });
}

/** An accessor returning what fhirpath.js returns for `Type.path`, or undefined when it needs fhirpath.js. */
export function compilePath(expression: string): Accessor | undefined {
  const [type, ...parts] = names(expression);
  if (!type || !TYPE.test(type)) return undefined;
  const r = resolve(type, parts);
  return r && accessor(r.steps, r.at);
}

/**
 * An accessor for a path relative to the elements `base` yields (a composite parameter's component, e.g. `code`
 * or `value.ofType(Quantity)` on each `Observation.component`), or undefined. A union is compiled only when its
 * parts pick different types of one choice element (`value.ofType(dateTime) | value.ofType(Period)`): then no
 * value of one part can equal one of another, and the union is the parts' values in order, each kept once.
 */
export function compileRelative(base: Accessor, relative: string): Accessor | undefined {
  if (base.at === '') return undefined;
  const parts = relative.split('|').map((p) => p.trim());
  if (parts.length > 1) return choiceUnion(base.at, parts);
  const r = resolve(base.at, names(relative));
  return r && r.steps.length > 0 ? accessor(r.steps, r.at) : undefined;
}

function choiceUnion(at: string, parts: string[]): Accessor | undefined {
  const split = parts.map((p) => /^(.+)\.(ofType\([A-Za-z]+\))$/.exec(p));
  const prefix = split[0]?.[1];
  const types = new Set(split.map((m) => m?.[2]));
  if (split.some((m) => !m || m[1] !== prefix) || types.size !== parts.length) return undefined;
  const fns: Accessor[] = [];
  for (const part of parts) {
    const r = resolve(at, names(part));
    if (!r || r.steps.length === 0) return undefined;
    fns.push(accessor(r.steps, r.at));
  }
  const fn = (node: unknown) => {
    const out: unknown[] = [];
    for (const f of fns) for (const v of f(node)) if (!out.some((o) => isDeepStrictEqual(o, v))) out.push(v);
    return out;
  };
  // The parts end on different types: no one model path to continue from.
  return Object.assign(fn, { at: '' });
}
