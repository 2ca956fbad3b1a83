import { importPKCS8 } from 'jose';
import { ConfigurationError } from '../../errors.js';
import { FhirClient, type FhirClientOptions } from '../../fhir-client.js';
import { TokenManager } from '../../token-manager.js';
import { DEFAULT_TOKEN_URI_PREFERENCE, lookUpOrganization, pickTokenUri } from './directory.js';

export interface ConnectViaDirectoryOptions {
  /** FHIR base of the directory, e.g. https://directory.example/directory. */
  directory: string;
  /** OID of the organization to reach (with or without `urn:oid:`). */
  organization: string;
  /** This system's client id: the FQDN its network certificate was issued for. */
  clientId: string;
  /** PEM certificate chain issued by the network, leaf first (intermediates may follow). */
  certificate: string;
  /** PEM (PKCS #8) private key of the leaf certificate. */
  key: string;
  /** Which `oauth-uris` entry to use, in order. Default: carequality-token, then token. */
  tokenUriPreference?: string[];
  scope?: string;
  /** fetch for every request (directory, provider, token), e.g. `tlsFetch({ ca, cert, key })`. */
  fetch?: typeof fetch;
  /** More options for the returned client (retry, headers, correlation id…). */
  client?: Partial<Omit<FhirClientOptions, 'baseUrl' | 'tokens' | 'fetch'>>;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/g;

/** The `x5c` header value of a PEM chain: each certificate as standard base64 DER, leaf first. */
export function x5cOf(pem: string): string[] {
  const chain = [...pem.matchAll(PEM_CERT)].map((m) => (m[1] as string).replace(/\s+/g, ''));
  if (chain.length === 0) throw new ConfigurationError('certificate must be a PEM certificate (chain)');
  return chain;
}

/** ES256 for a P-256 key, RS256 for an RSA key, as networks issue them. */
async function signingKey(pem: string): Promise<CryptoKey> {
  for (const alg of ['ES256', 'ES384', 'RS256']) {
    try {
      return (await importPKCS8(pem, alg)) as CryptoKey;
    } catch {}
  }
  throw new ConfigurationError('key must be a PEM PKCS #8 private key (EC P-256/P-384 or RSA)');
}

/**
 * The seed-003 path for a consumer: look the provider up in the directory, read its CapabilityStatement for the
 * token URI, authenticate with a client assertion carrying the network certificate chain (`x5c`, no per-pair
 * registration), and return a FHIR client for the provider whose tokens renew themselves.
 */
export async function connectViaDirectory(o: ConnectViaDirectoryOptions): Promise<FhirClient> {
  const x5c = x5cOf(o.certificate);
  const privateKey = await signingKey(o.key);
  const directory = new FhirClient({ baseUrl: o.directory, ...(o.fetch ? { fetch: o.fetch } : {}) });
  const { fhirBase } = await lookUpOrganization(directory, o.organization);
  const provider = new FhirClient({ baseUrl: fhirBase, ...(o.fetch ? { fetch: o.fetch } : {}) });
  const capability = await provider.body<Parameters<typeof pickTokenUri>[0]>('GET', 'metadata');
  const tokenEndpoint = pickTokenUri(capability, o.tokenUriPreference ?? DEFAULT_TOKEN_URI_PREFERENCE);
  const tokens = new TokenManager({
    tokenEndpoint,
    clientId: o.clientId,
    auth: { method: 'private_key_jwt', privateKey, x5c, audience: tokenEndpoint },
    ...(o.scope ? { scope: o.scope } : {}),
    ...(o.fetch ? { fetch: o.fetch } : {}),
  });
  return new FhirClient({ ...o.client, baseUrl: fhirBase, tokens, ...(o.fetch ? { fetch: o.fetch } : {}) });
}
