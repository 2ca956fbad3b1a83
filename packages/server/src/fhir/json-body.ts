import { FhirError } from './errors.ts';

/**
 * FHIR resources nest a few dozen levels at most (Bundle → resource → contained → extension …). Deeper input
 * is hostile: the recursive code downstream (FHIRPath, validation, serialization) would overflow the stack.
 */
export const MAX_JSON_DEPTH = 100;

/** JSON.parse plus the checks a FHIR body needs before any code walks it; errors say what was wrong. */
export function parseFhirJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FhirError(400, 'structure', `request body is not valid JSON: ${(err as Error).message}`);
  }
  inspect(value, 0);
  return value;
}

function inspect(value: unknown, depth: number): void {
  if (typeof value !== 'object' || value === null) return;
  if (depth >= MAX_JSON_DEPTH) {
    throw new FhirError(400, 'structure', `request body nests deeper than ${MAX_JSON_DEPTH} levels`);
  }
  if (Array.isArray(value)) {
    for (const item of value) inspect(item, depth + 1);
    return;
  }
  for (const key of Object.keys(value)) {
    // No FHIR element has these names; objects carrying them are how prototype-pollution attacks travel.
    if (key === '__proto__' || key === 'constructor' || key === 'prototype') {
      throw new FhirError(400, 'structure', `request body contains the key "${key}", which FHIR does not allow`);
    }
    inspect((value as Record<string, unknown>)[key], depth + 1);
  }
}
