import { CarevaultError, FhirResponseError } from '../../errors.js';
import type { FhirClient } from '../../fhir-client.js';
import type { Resource } from '../../fhir-types.js';

/** The directory or the provider does not say how to reach it (seed 003). */
export class DirectoryError extends CarevaultError {}

export const OAUTH_URIS = 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris';
/** Cerner publishes a separate token URI for Carequality members beside the SMART one (seed 003). */
export const DEFAULT_TOKEN_URI_PREFERENCE = ['carequality-token', 'token'];

interface EndpointResource extends Resource {
  status?: string;
  connectionType?: { system?: string; code?: string };
  address?: string;
}
interface OrganizationResource extends Resource {
  name?: string;
  contained?: Resource[];
  endpoint?: { reference?: string }[];
}
interface Extension {
  url?: string;
  valueUri?: string;
  extension?: Extension[];
}
interface CapabilityStatement extends Resource {
  rest?: { mode?: string; security?: { extension?: Extension[] } }[];
}

export interface DirectoryEntry {
  organization: OrganizationResource;
  /** The FHIR base of the organization's active `hl7-fhir-rest` Endpoint. */
  fhirBase: string;
}

const plainOid = (oid: string) => oid.replace(/^urn:oid:/, '');

/** Reads the Organization (by OID) from the directory and picks its active FHIR REST endpoint. */
export async function lookUpOrganization(directory: FhirClient, organizationOid: string): Promise<DirectoryEntry> {
  const oid = plainOid(organizationOid);
  let organization: OrganizationResource;
  try {
    organization = await directory.read<OrganizationResource>('Organization', oid);
  } catch (err) {
    if (err instanceof FhirResponseError && err.status === 404)
      throw new DirectoryError(`organization ${oid} is not in the directory ${directory.baseUrl}`, { cause: err });
    throw err;
  }
  const endpoints: EndpointResource[] = [];
  for (const ref of organization.endpoint ?? []) {
    const reference = ref.reference ?? '';
    if (reference.startsWith('#')) {
      const found = organization.contained?.find((r) => r.resourceType === 'Endpoint' && r.id === reference.slice(1));
      if (found) endpoints.push(found as EndpointResource);
    } else if (/^Endpoint\/[A-Za-z0-9.-]{1,64}$/.test(reference)) {
      endpoints.push(await directory.read<EndpointResource>('Endpoint', reference.slice('Endpoint/'.length)));
    }
  }
  const fhir = endpoints.find(
    (e) => (e.status ?? 'active') === 'active' && e.connectionType?.code === 'hl7-fhir-rest' && e.address,
  );
  if (!fhir?.address)
    throw new DirectoryError(`organization ${oid} has no active hl7-fhir-rest Endpoint in the directory`);
  try {
    const url = new URL(fhir.address);
    if (url.protocol !== 'https:') throw new Error('not https');
  } catch {
    throw new DirectoryError(`the Endpoint address of organization ${oid} is not an https URL: ${fhir.address}`);
  }
  return { organization, fhirBase: fhir.address.replace(/\/$/, '') };
}

/** The OAuth URIs a CapabilityStatement publishes (SMART `oauth-uris`), by name. */
export function oauthUris(statement: CapabilityStatement): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rest of statement.rest ?? []) {
    for (const ext of rest.security?.extension ?? []) {
      if (ext.url !== OAUTH_URIS) continue;
      for (const uri of ext.extension ?? []) if (uri.url && uri.valueUri) out[uri.url] ??= uri.valueUri;
    }
  }
  return out;
}

/** The first URI of the preference list the statement publishes. */
export function pickTokenUri(statement: CapabilityStatement, preference = DEFAULT_TOKEN_URI_PREFERENCE): string {
  const uris = oauthUris(statement);
  for (const name of preference) if (uris[name]) return uris[name];
  throw new DirectoryError(
    `the CapabilityStatement names no token URI (looked for ${preference.join(', ')}; it has ${Object.keys(uris).join(', ') || 'none'})`,
  );
}
