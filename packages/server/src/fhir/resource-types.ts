import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const model = require('fhirpath/fhir-context/r4') as { type2Parent: Record<string, string> };

function isResource(type: string): boolean {
  let t: string | undefined = type;
  while (t) {
    if (t === 'Resource') return true;
    t = model.type2Parent[t];
  }
  return false;
}

/**
 * The concrete R4 resource types, taken from the official definitions fhirpath.js ships (not typed in
 * here): everything that derives from Resource except the two abstract bases.
 */
export const RESOURCE_TYPES: ReadonlySet<string> = new Set(
  Object.keys(model.type2Parent)
    .filter((t) => t !== 'Resource' && t !== 'DomainResource' && isResource(t))
    .sort(),
);

export const ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;
