import type { FhirClient } from '../../fhir-client.js';
import type { Resource } from '../../fhir-types.js';
import { BSN_SYSTEM } from './bsn.js';

/** Where carevault keeps a source's connection details on its directory Endpoint. */
export const ENDPOINT_EXT = {
  clientId: 'https://carevault.dev/fhir/StructureDefinition/zorgviewer-client-id',
  style: 'https://carevault.dev/fhir/StructureDefinition/zorgviewer-style',
  ca: 'https://carevault.dev/fhir/StructureDefinition/zorgviewer-ca',
} as const;

export const OID_IDENTIFIER_SYSTEM = 'urn:ietf:rfc:3986';
/** Zorgviewer ToestemmingConsent (policy of the region's consent registry). */
export const CONSENT_POLICY = 'https://rivo-noord.nl/zorgviewer/toestemming';

/** A care provider's source system, as the address directory ("Adressering") describes it. */
export interface SourceSystem {
  name: string;
  /** Dotted OID of the organization. */
  organizationOid: string;
  fhirBase: string;
  /** The client id the source knows this viewer by. */
  clientId: string;
  style: 'generic' | 'epic';
  /** PEM trust anchor for the source's TLS certificate, when it is not publicly trusted. */
  ca?: string | undefined;
}

interface Identified extends Resource {
  name?: string;
  identifier?: { system?: string; value?: string }[];
}
interface EndpointResource extends Resource {
  status?: string;
  managingOrganization?: { reference?: string };
  address?: string;
  extension?: { url?: string; valueString?: string; valueCode?: string; valueBase64Binary?: string }[];
}

const oidOf = (org: Identified): string | undefined => {
  for (const i of org.identifier ?? []) {
    if (i.value?.startsWith('urn:oid:')) return i.value.slice(8);
  }
  return undefined;
};

function sourceOf(org: Identified, ep: EndpointResource): SourceSystem | undefined {
  const oid = oidOf(org);
  const ext = (url: string) => ep.extension?.find((e) => e.url === url);
  const clientId = ext(ENDPOINT_EXT.clientId)?.valueString;
  if (!oid || !ep.address || !clientId || ep.status !== 'active') return undefined;
  const ca = ext(ENDPOINT_EXT.ca)?.valueBase64Binary;
  return {
    name: org.name ?? oid,
    organizationOid: oid,
    fhirBase: ep.address,
    clientId,
    style: ext(ENDPOINT_EXT.style)?.valueCode === 'epic' ? 'epic' : 'generic',
    ...(ca ? { ca: new TextDecoder().decode(Uint8Array.from(atob(ca), (c) => c.charCodeAt(0))) } : {}),
  };
}

/**
 * seq-2a: every Organization of the address directory, then the active Endpoints of those organizations — asked
 * for 40 organizations at a time (`organization=a,b,…` is an OR), not one search per organization.
 */
export async function directorySources(directory: FhirClient, signal?: AbortSignal): Promise<SourceSystem[]> {
  const orgs = new Map<string, Identified>();
  for await (const org of directory.searchAll<Identified>('Organization', { _count: 200 }, { signal })) {
    orgs.set(`Organization/${org.id}`, org);
  }
  const refs = [...orgs.keys()];
  const chunks = Array.from({ length: Math.ceil(refs.length / 40) }, (_, i) => refs.slice(i * 40, i * 40 + 40));
  const found = await Promise.all(
    chunks.map(async (chunk) => {
      const out: SourceSystem[] = [];
      const q = { organization: chunk.join(','), status: 'active', _count: 200 };
      for await (const ep of directory.searchAll<EndpointResource>('Endpoint', q, { signal })) {
        const org = orgs.get(ep.managingOrganization?.reference ?? '');
        const s = org ? sourceOf(org, ep) : undefined;
        if (s) out.push(s);
      }
      return out;
    }),
  );
  return found.flat();
}

interface ConsentResource extends Resource {
  status?: string;
  dateTime?: string;
  provision?: { period?: { start?: string; end?: string } };
  organization?: { identifier?: { value?: string }; display?: string }[];
  meta?: { lastUpdated?: string };
}

export type ConsentState = 'active' | 'none';

/**
 * seq-2: the patient's consents in the consent registry (`Consent?patient:Patient.identifier=<BSN>`). Per
 * organization the most recent consent decides; it counts when its status is active and today lies in its period.
 */
export async function consentedOrganizations(
  consent: FhirClient,
  bsn: string,
  today: string,
  signal?: AbortSignal,
): Promise<Set<string>> {
  const latest = new Map<string, ConsentResource>();
  const q = { 'patient:Patient.identifier': `${BSN_SYSTEM}|${bsn}`, _count: 200 };
  for await (const c of consent.searchAll<ConsentResource>('Consent', q, { signal })) {
    for (const o of c.organization ?? []) {
      const oid = o.identifier?.value?.replace(/^urn:oid:/, '');
      if (!oid) continue;
      const prev = latest.get(oid);
      if (!prev || stamp(c) > stamp(prev)) latest.set(oid, c);
    }
  }
  const active = new Set<string>();
  for (const [oid, c] of latest) {
    const period = c.provision?.period;
    const started = !period?.start || period.start.slice(0, 10) <= today;
    const notEnded = !period?.end || period.end.slice(0, 10) >= today;
    if (c.status === 'active' && started && notEnded) active.add(oid);
  }
  return active;
}

const stamp = (c: ConsentResource) => `${c.dateTime ?? ''}|${c.meta?.lastUpdated ?? ''}`;
