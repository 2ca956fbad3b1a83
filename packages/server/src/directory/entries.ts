import { operatorContext } from '../admin/operator.ts';
import type { Config } from '../config/index.ts';
import { update } from '../fhir/interactions/update.ts';
import type { Store } from '../store/types.ts';
import { VaultInputError } from '../vault/partitions.ts';

/** The vault that holds the directory: Organizations, each with its contained FHIR Endpoint. */
export const DIRECTORY_VAULT = 'directory';
export const OID_SYSTEM = 'urn:ietf:rfc:3986';
const OID_RE = /^[0-2](\.(0|[1-9][0-9]*)){1,40}$/;

export interface DirectoryEntryInput {
  orgOid: string;
  name: string;
  fhirBase: string;
}

/**
 * A directory entry as Carequality's directory answers it (seed 003): the Organization, identified by its OID
 * (also its id), with the FHIR endpoint contained and referenced from `endpoint`.
 */
export function directoryOrganization(input: DirectoryEntryInput): Record<string, unknown> {
  const oid = input.orgOid.replace(/^urn:oid:/, '');
  if (!OID_RE.test(oid)) throw new VaultInputError(`--org-oid "${input.orgOid}" is not a dotted OID`);
  const name = input.name.trim();
  if (!/^[^<>\p{Cc}]{1,200}$/u.test(name)) throw new VaultInputError('--name must be 1-200 printable characters');
  let base: URL;
  try {
    base = new URL(input.fhirBase);
  } catch {
    throw new VaultInputError(`--fhir-base "${input.fhirBase}" is not an absolute URL`);
  }
  if (base.protocol !== 'https:') throw new VaultInputError('--fhir-base must be an https URL');
  if (base.username || base.password || base.search || base.hash)
    throw new VaultInputError('--fhir-base must not carry credentials, a query or a fragment');
  return {
    resourceType: 'Organization',
    id: oid,
    contained: [
      {
        resourceType: 'Endpoint',
        id: 'fhir',
        status: 'active',
        connectionType: {
          system: 'http://terminology.hl7.org/CodeSystem/endpoint-connection-type',
          code: 'hl7-fhir-rest',
        },
        name: `${name} FHIR R4`,
        payloadType: [
          { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/endpoint-payload-type', code: 'any' }] },
        ],
        payloadMimeType: ['application/fhir+json', 'application/fhir+xml'],
        address: base.href.replace(/\/$/, ''),
      },
    ],
    identifier: [{ system: OID_SYSTEM, value: `urn:oid:${oid}` }],
    active: true,
    name,
    endpoint: [{ reference: '#fhir' }],
  };
}

/** `carevault directory add`: creates or replaces an entry (audited as the operator's write). */
export async function addDirectoryEntry(store: Store, config: Config, input: DirectoryEntryInput) {
  const organization = directoryOrganization(input);
  if (!(await store.partitions.get(DIRECTORY_VAULT))) {
    await store.partitions.create({
      name: DIRECTORY_VAULT,
      accountUrn: undefined,
      identifiers: [],
      createdAt: Math.floor(Date.now() / 1000),
    });
  }
  const ctx = operatorContext(store, config, DIRECTORY_VAULT, 'carevault-directory');
  const { version, created } = await update(ctx, 'Organization', organization.id as string, organization, undefined);
  return {
    organization: `Organization/${version.id}`,
    version: version.version,
    created,
    url: `${config.baseUrl}/directory/Organization/${version.id}`,
  };
}
