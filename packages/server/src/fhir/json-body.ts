import { FhirError } from './errors.ts';

/**
 * FHIR resources nest a few dozen levels at most (Bundle → resource → contained → extension …). Deeper input
 * is hostile: the recursive code downstream (FHIRPath, validation, serialization) would overflow the stack.
 */
export const MAX_JSON_DEPTH = 100;

/**
 * No FHIR element has these names. Objects carrying `__proto__`/`constructor` are how prototype-pollution attacks
 * travel; the rest (`toString`, `valueOf` …) are found on every object by code that looks an element up by name —
 * the R4 validator took `"toString": {…}` in a Patient for a known element and stored it.
 */
const PROTOTYPE_NAMES = new Set(['prototype', ...Object.getOwnPropertyNames(Object.prototype)]);

/** A name every JavaScript object answers to: never an element of a FHIR type. */
export const isPrototypeName = (name: string) => PROTOTYPE_NAMES.has(name);

/** JSON.parse plus the checks a FHIR body needs before any code walks it; errors say what was wrong. */
export function parseFhirJson(text: string, what = 'request body'): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FhirError(400, 'structure', `${what} is not valid JSON: ${(err as Error).message}`);
  }
  inspect(value, 0, what);
  return value;
}

/** The same checks on a value built here rather than parsed (a patched resource: a patch names keys by path). */
export function checkFhirJson(value: unknown, what: string): void {
  inspect(value, 0, what);
}

function inspect(value: unknown, depth: number, what: string): void {
  if (typeof value !== 'object' || value === null) return;
  if (depth >= MAX_JSON_DEPTH) {
    throw new FhirError(400, 'structure', `${what} nests deeper than ${MAX_JSON_DEPTH} levels`);
  }
  if (Array.isArray(value)) {
    for (const item of value) inspect(item, depth + 1, what);
    return;
  }
  for (const key of Object.keys(value)) {
    if (PROTOTYPE_NAMES.has(key)) {
      throw new FhirError(400, 'structure', `${what} contains the key "${key}", which FHIR does not allow`);
    }
    inspect((value as Record<string, unknown>)[key], depth + 1, what);
  }
}
