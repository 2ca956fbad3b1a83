import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { BSN_SYSTEM, CONSENT_POLICY, ENDPOINT_EXT, isValidBsn, OID_IDENTIFIER_SYSTEM } from '@carevault/sdk';
import { operatorContext } from '../admin/operator.ts';
import { withStore } from '../admin/vault.ts';
import { ClientRegistry } from '../auth/clients.ts';
import { writeSecretFile } from '../config/files.ts';
import type { Config } from '../config/index.ts';
import { transactionEntries } from '../fhir/bundle/entries.ts';
import { runTransaction } from '../fhir/bundle/transaction.ts';
import { search } from '../fhir/interactions/search.ts';
import type { Store } from '../store/types.ts';
import { addGrant } from '../vault/grants.ts';
import { addPartition } from '../vault/partitions.ts';
import {
  ensureSigningKey,
  jwksPath,
  loadSettings,
  requireSettings,
  saveSettings,
  ViewerInputError,
  type ViewerSettings,
} from './settings.ts';

const OID_RE = /^[0-2](\.(0|[1-9][0-9]*))+$/;
const SOURCE_SYSTEM = 'https://carevault.dev/fhir/NamingSystem/zorgviewer-source';
const DIRECTORY_SCOPES = 'system/Organization.rs system/Endpoint.rs system/PlanDefinition.rs';
const CONSENT_SCOPES = 'system/Consent.rs system/Patient.rs';

function oid(name: string, value: string | undefined): string {
  const v = value?.replace(/^urn:oid:/, '');
  if (!v || !OID_RE.test(v))
    throw new ViewerInputError(`${name} must be a dotted OID such as 2.16.840.1.113883.2.4.3.8`);
  return v;
}

export interface ViewerInitOptions {
  orgOid?: string;
  orgName?: string;
  clientId?: string;
  consentCheck?: boolean;
}

function describe(config: Config, s: ViewerSettings) {
  return {
    clientId: s.clientId,
    jwksUri: `${config.baseUrl}/viewer/jwks`,
    jwksFile: jwksPath(config.dataDir),
    directory: `${config.baseUrl}/fhir/${s.directory}`,
    consent: `${config.baseUrl}/fhir/${s.consent}`,
    consentCheck: s.consentCheck,
  };
}

/**
 * `carevault viewer init`: the viewer's signing key and JWKS, its directory and consent vaults, and its own
 * client at this platform (the same key; acting for any organization's professionals) with read access to both.
 * Running it again changes nothing and prints the same answer.
 */
export async function viewerInit(config: Config, o: ViewerInitOptions) {
  const existing = loadSettings(config.dataDir);
  if (existing) return describe(config, existing);
  const orgOid = o.orgOid === undefined ? undefined : oid('--org-oid', o.orgOid);
  const clientId = o.clientId ?? 'zorgviewer';
  const { kid, publicJwk } = await ensureSigningKey(config.dataDir);
  const jwks = { keys: [publicJwk] };
  const settings: ViewerSettings = {
    clientId,
    kid,
    alg: 'ES256',
    orgOid,
    orgName: o.orgName,
    directory: 'zorgviewer-directory',
    consent: 'zorgviewer-consent',
    consentCheck: o.consentCheck !== false,
  };
  await withStore(config, async (store) => {
    const registry = new ClientRegistry(store);
    if (!(await store.clients.get(clientId))) {
      await registry.register({
        clientId,
        auth: 'private_key_jwt',
        jwks,
        scopes: `${DIRECTORY_SCOPES} ${CONSENT_SCOPES}`.split(' '),
        orgOid,
        orgName: o.orgName,
        name: 'Zorgviewer',
        userContext: 'aggregator',
      });
    }
    for (const [partition, scope] of [
      [settings.directory, DIRECTORY_SCOPES],
      [settings.consent, CONSENT_SCOPES],
    ] as const) {
      if (!(await store.partitions.get(partition))) await addPartition(store, partition);
      await addGrant(store, { partition, client: clientId, scope });
    }
  });
  writeSecretFile(jwksPath(config.dataDir), `${JSON.stringify(jwks, null, 2)}\n`, 0o644);
  saveSettings(config.dataDir, settings);
  return describe(config, settings);
}

async function write(store: Store, config: Config, partition: string, command: string, entries: unknown[]) {
  const ctx = operatorContext(store, config, partition, command);
  const bundle = { resourceType: 'Bundle', type: 'transaction', entry: entries };
  const results = await runTransaction(ctx, transactionEntries(bundle, ctx.base), false);
  return results.map((r) => r.version?.id as string);
}

export interface SourceAddOptions {
  name: string;
  orgOid: string;
  fhirBase: string;
  clientId: string;
  ca?: string;
  style?: string;
}

/**
 * `carevault viewer source add`: the source as the address directory holds it (seq-2a) — an Organization with
 * its OID and an Endpoint carrying the FHIR base and how to connect. Adding the same OID again updates both.
 */
export async function viewerSourceAdd(config: Config, o: SourceAddOptions) {
  const s = requireSettings(config.dataDir);
  const orgOid = oid('--org-oid', o.orgOid);
  if (!o.name || o.name.length > 100) throw new ViewerInputError('--name must be 1-100 characters');
  let base: URL;
  try {
    base = new URL(o.fhirBase);
  } catch {
    throw new ViewerInputError(`--fhir-base "${o.fhirBase}" is not an absolute URL`);
  }
  if (base.protocol !== 'https:' && base.protocol !== 'http:')
    throw new ViewerInputError('--fhir-base must be http(s)');
  if (!/^[A-Za-z0-9][A-Za-z0-9._~/-]{0,127}$/.test(o.clientId ?? ''))
    throw new ViewerInputError('--client-id must be 1-128 characters of A-Z a-z 0-9 . _ ~ - /');
  const style = o.style ?? 'generic';
  if (style !== 'generic' && style !== 'epic') throw new ViewerInputError('--style must be generic or epic');
  let caPem: string | undefined;
  if (o.ca) {
    if (!existsSync(o.ca)) throw new ViewerInputError(`file not found: ${o.ca}`);
    caPem = readFileSync(o.ca, 'utf8');
    try {
      new X509Certificate(caPem);
    } catch {
      throw new ViewerInputError(`${o.ca} is not a PEM certificate`);
    }
  }
  const identifier = { system: OID_IDENTIFIER_SYSTEM, value: `urn:oid:${orgOid}` };
  return withStore(config, async (store) => {
    const [orgId] = await write(store, config, s.directory, 'carevault-viewer', [
      {
        request: { method: 'PUT', url: `Organization?identifier=${OID_IDENTIFIER_SYSTEM}|urn:oid:${orgOid}` },
        resource: { resourceType: 'Organization', active: true, identifier: [identifier], name: o.name },
      },
    ]);
    const extension = [
      { url: ENDPOINT_EXT.clientId, valueString: o.clientId },
      { url: ENDPOINT_EXT.style, valueCode: style },
      ...(caPem ? [{ url: ENDPOINT_EXT.ca, valueBase64Binary: Buffer.from(caPem).toString('base64') }] : []),
    ];
    const [endpointId] = await write(store, config, s.directory, 'carevault-viewer', [
      {
        request: { method: 'PUT', url: `Endpoint?identifier=${SOURCE_SYSTEM}|${orgOid}` },
        resource: {
          resourceType: 'Endpoint',
          extension,
          identifier: [{ system: SOURCE_SYSTEM, value: orgOid }],
          status: 'active',
          connectionType: {
            system: 'http://terminology.hl7.org/CodeSystem/endpoint-connection-type',
            code: 'hl7-fhir-rest',
          },
          name: o.name,
          managingOrganization: { reference: `Organization/${orgId}` },
          payloadType: [
            { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/endpoint-payload-type', code: 'any' }] },
          ],
          payloadMimeType: ['application/fhir+json'],
          address: base.href.replace(/\/$/, ''),
        },
      },
    ]);
    return {
      name: o.name,
      organizationOid: orgOid,
      organization: `Organization/${orgId}`,
      endpoint: `Endpoint/${endpointId}`,
      fhirBase: base.href.replace(/\/$/, ''),
      clientId: o.clientId,
      style,
    };
  });
}

async function searchAll(store: Store, config: Config, partition: string, type: string, params: [string, string][]) {
  const ctx = operatorContext(store, config, partition, 'carevault-viewer');
  const bundle = JSON.parse(
    await search(ctx, type, [...params, ['_count', '1000']], { strict: true, restrictions: undefined }),
  );
  return ((bundle.entry ?? []) as { resource: Record<string, unknown> }[]).map((e) => e.resource);
}

/** `carevault viewer source list`: the directory's sources with their endpoints. */
export async function viewerSourceList(config: Config) {
  const s = requireSettings(config.dataDir);
  return withStore(config, async (store) => {
    const endpoints = await searchAll(store, config, s.directory, 'Endpoint', [['_include', 'Endpoint:organization']]);
    const orgs = new Map(
      endpoints.filter((r) => r.resourceType === 'Organization').map((r) => [`Organization/${r.id}`, r]),
    );
    return endpoints
      .filter((r) => r.resourceType === 'Endpoint')
      .map((ep) => {
        const org = orgs.get((ep.managingOrganization as { reference?: string })?.reference ?? '');
        const ext = (url: string) =>
          (ep.extension as { url: string; valueString?: string; valueCode?: string }[] | undefined)?.find(
            (e) => e.url === url,
          );
        return {
          name: org?.name ?? ep.name,
          organizationOid: ((org?.identifier as { value?: string }[] | undefined)?.[0]?.value ?? '').replace(
            /^urn:oid:/,
            '',
          ),
          organization: `Organization/${org?.id}`,
          endpoint: `Endpoint/${ep.id}`,
          fhirBase: ep.address,
          status: ep.status,
          clientId: ext(ENDPOINT_EXT.clientId)?.valueString,
          style: ext(ENDPOINT_EXT.style)?.valueCode ?? 'generic',
          ca: ext(ENDPOINT_EXT.ca) !== undefined,
        };
      });
  });
}

export interface ConsentAddOptions {
  bsn: string;
  orgOid: string;
  status?: string;
  start?: string;
  end?: string;
}

const DATE_RE = /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/;

/**
 * `carevault viewer consent add`: a ToestemmingConsent in the consent registry (MITZ-like) — the patient, by BSN,
 * permits (or refuses) sharing by one organization, optionally for a period.
 */
export async function viewerConsentAdd(config: Config, o: ConsentAddOptions) {
  const s = requireSettings(config.dataDir);
  if (!isValidBsn(o.bsn))
    throw new ViewerInputError(`--bsn "${o.bsn}" is not a valid BSN (9 digits passing the 11-test)`);
  const orgOid = oid('--org-oid', o.orgOid);
  const status = o.status ?? 'active';
  if (status !== 'active' && status !== 'rejected') throw new ViewerInputError('--status must be active or rejected');
  for (const [flag, v] of [
    ['--start', o.start],
    ['--end', o.end],
  ] as const) {
    if (v !== undefined && !DATE_RE.test(v)) throw new ViewerInputError(`${flag} must be a date YYYY-MM-DD`);
  }
  if (o.start && o.end && o.end < o.start) throw new ViewerInputError('--end is before --start');
  return withStore(config, async (store) => {
    const [patientId] = await write(store, config, s.consent, 'carevault-viewer', [
      {
        request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${BSN_SYSTEM}|${o.bsn}` },
        resource: { resourceType: 'Patient', identifier: [{ system: BSN_SYSTEM, value: o.bsn }] },
      },
    ]);
    const period =
      o.start || o.end ? { period: { ...(o.start ? { start: o.start } : {}), ...(o.end ? { end: o.end } : {}) } } : {};
    const [consentId] = await write(store, config, s.consent, 'carevault-viewer', [
      {
        request: { method: 'POST', url: 'Consent' },
        resource: {
          resourceType: 'Consent',
          status,
          scope: {
            coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }],
          },
          category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }], text: 'Doss. delen?' }],
          patient: { reference: `Patient/${patientId}` },
          dateTime: new Date().toISOString(),
          organization: [{ identifier: { system: OID_IDENTIFIER_SYSTEM, value: `urn:oid:${orgOid}` } }],
          policy: [{ uri: CONSENT_POLICY }],
          provision: { type: status === 'active' ? 'permit' : 'deny', ...period },
        },
      },
    ]);
    return {
      consent: `Consent/${consentId}`,
      patient: `Patient/${patientId}`,
      bsn: o.bsn,
      organizationOid: orgOid,
      status,
      ...(o.start ? { start: o.start } : {}),
      ...(o.end ? { end: o.end } : {}),
    };
  });
}
