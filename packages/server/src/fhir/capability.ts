import type { CapabilityStatement, CapabilityStatementRestResourceInteraction } from 'fhir/r4.js';
import { RESOURCE_TYPES } from './resource-types.ts';
import { SEARCH_PARAMETERS } from './search/definitions.ts';

export interface CapabilityOptions {
  issuer: string;
  /** FHIR base of the vault. */
  base: string;
}

const BULK = 'http://hl7.org/fhir/uv/bulkdata';
const CORE = 'http://hl7.org/fhir/OperationDefinition';
/** An operation by its name and the OperationDefinition of `definition` (`Type-name` in R4 core unless a URL). */
const op = (name: string, definition = '') => ({
  name,
  definition: definition.startsWith('http') ? definition : `${CORE}/${definition}`,
});

/** The operations offered on each type (beside `$validate` on every one). */
const OPERATIONS: Record<string, { name: string; definition: string }[]> = {
  Patient: [op('export', `${BULK}/OperationDefinition/patient-export`), op('everything', 'Patient-everything')],
  Group: [op('export', `${BULK}/OperationDefinition/group-export`)],
  ValueSet: [op('expand', 'ValueSet-expand'), op('validate-code', 'ValueSet-validate-code')],
  ConceptMap: [op('translate', 'ConceptMap-translate')],
  Observation: [op('lastn', 'Observation-lastn')],
  Composition: [op('document', 'Composition-document')],
  DocumentReference: [op('docref', 'http://hl7.org/fhir/us/core/OperationDefinition/docref')],
  CodeSystem: [
    op('lookup', 'CodeSystem-lookup'),
    op('subsumes', 'CodeSystem-subsumes'),
    op('validate-code', 'CodeSystem-validate-code'),
  ],
  Measure: [
    op('submit-data', 'Measure-submit-data'),
    op('data-requirements', 'Measure-data-requirements'),
    op('evaluate-measure', 'Measure-evaluate-measure'),
    op('care-gaps', 'http://hl7.org/fhir/us/davinci-deqm/OperationDefinition/care-gaps'),
  ],
};

let resourceList: CapabilityStatement['rest'] extends (infer R)[] | undefined
  ? NonNullable<R extends { resource?: infer X } ? X : never>
  : never;

/** Per-type capabilities do not depend on the vault; built once. */
function resources() {
  resourceList ??= [...RESOURCE_TYPES].map((type) => ({
    type,
    interaction: [
      'read',
      'vread',
      'create',
      'update',
      'delete',
      'patch',
      'history-instance',
      'history-type',
      'search-type',
    ]
      // The audit trail is written by the server only (vault/policy.ts).
      .filter((code) => type !== 'AuditEvent' || !['create', 'update', 'delete', 'patch'].includes(code))
      .map((code) => ({
        code: code as CapabilityStatementRestResourceInteraction['code'],
      })),
    ...(OPERATIONS[type] ? { operation: OPERATIONS[type] } : {}),
    versioning: 'versioned' as const,
    readHistory: true,
    updateCreate: true,
    conditionalCreate: true,
    conditionalRead: 'full-support' as const,
    conditionalUpdate: true,
    conditionalDelete: 'single' as const,
    searchInclude: references(type).map((p) => `${type}:${p}`),
    searchRevInclude: [...RESOURCE_TYPES].flatMap((source) =>
      references(source)
        .filter((p) => SEARCH_PARAMETERS[source]?.[p]?.targets?.includes(type))
        .map((p) => `${source}:${p}`),
    ),
    searchParam: [
      { name: '_id', type: 'token' as const },
      { name: '_lastUpdated', type: 'date' as const },
      { name: '_list', type: 'special' as const },
      { name: '_filter', type: 'special' as const },
      ...Object.entries(SEARCH_PARAMETERS[type] ?? {}).map(([name, d]) => ({ name, type: d.type })),
    ],
  }));
  return resourceList;
}

function references(type: string): string[] {
  return Object.entries(SEARCH_PARAMETERS[type] ?? {})
    .filter(([, d]) => d.type === 'reference')
    .map(([p]) => p);
}

/**
 * The CapabilityStatement states exactly what this server does today (J01): read, vread, create,
 * update-as-create, delete, history and search (every R4 search parameter) for every R4 type;
 * conditional create, update and (single) delete; JSON Patch and FHIRPath Patch, also conditional (PATCH
 * Type?search) and in Bundles;
 * Bulk Data export at the vault, Patient and Group.
 */
export function capabilityStatement(o: CapabilityOptions): CapabilityStatement {
  const oauth = `${o.issuer}/oauth`;
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2026-11-22',
    publisher: 'carevault',
    kind: 'instance',
    software: { name: 'carevault', version: '0.1.0' },
    implementation: { description: 'carevault FHIR vault', url: o.base },
    fhirVersion: '4.0.1',
    instantiates: [`${BULK}/CapabilityStatement/bulk-data`],
    format: ['json', 'xml', 'application/fhir+json', 'application/fhir+xml'],
    rest: [
      {
        mode: 'server',
        security: {
          cors: true,
          service: [
            {
              coding: [
                { system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' },
                { system: 'http://profiles.ihe.net/fhir/ihe.securityTypes/CodeSystem/securityTypes', code: 'IUA' },
              ],
            },
          ],
          extension: [
            {
              url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
              extension: [
                { url: 'token', valueUri: `${oauth}/token` },
                { url: 'authorize', valueUri: `${oauth}/authorize` },
                { url: 'introspect', valueUri: `${oauth}/introspect` },
                { url: 'revoke', valueUri: `${oauth}/revoke` },
                { url: 'register', valueUri: `${oauth}/register` },
              ],
            },
          ],
        },
        resource: resources(),
        interaction: [
          { code: 'transaction' },
          { code: 'batch' },
          { code: 'search-system' },
          { code: 'history-system' },
        ],
        operation: [
          { name: 'export', definition: `${BULK}/OperationDefinition/export` },
          // On every type and instance: [type]/$validate, [type]/[id]/$validate.
          { name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' },
          // At the vault, on every type, instance and version ($meta), and on every instance (-add, -delete).
          { name: 'meta', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-meta' },
          { name: 'meta-add', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-meta-add' },
          { name: 'meta-delete', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-meta-delete' },
        ],
        // Patient/[id]/[type] searches (search.html#2.21.1.2).
        compartment: ['http://hl7.org/fhir/CompartmentDefinition/patient'],
      },
    ],
  };
}
