import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { JWK } from 'jose';
import { AUTH_METHODS, type AuthMethod, ClientInputError, ClientRegistry } from '../auth/clients.ts';
import { writeSecretFile } from '../config/files.ts';
import type { Config } from '../config/index.ts';
import { withInitLock } from '../config/init-lock.ts';
import { ensureDevPki } from '../pki/dev-pki.ts';
import { createSelfSigned, issueLeaf } from '../pki/x509.ts';
import { openStore } from '../store/index.ts';

export interface ClientAddOptions {
  auth: string;
  scope?: string;
  orgOid?: string;
  orgName?: string;
  orgGln?: string;
  accountUrn?: string;
  role?: string[];
  purposeOfUse?: string[];
  jwks?: string;
  jwksUri?: string;
  cert?: string;
  redirectUri?: string[];
  name?: string;
  tokenFormat?: string;
  tokenAlg?: string;
  resourceServer?: boolean;
  assertUserContext?: boolean;
  aggregator?: boolean;
  samlBearer?: boolean;
  out?: string;
}

function readJson(path: string): unknown {
  if (!existsSync(path)) throw new ClientInputError(`file not found: ${path}`);
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new ClientInputError(`${path} is not valid JSON`);
  }
}

function oneOf<T extends string>(name: string, value: string | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!allowed.includes(value as T)) throw new ClientInputError(`${name} must be one of ${allowed.join(', ')}`);
  return value as T;
}

async function withRegistry<T>(config: Config, fn: (registry: ClientRegistry) => Promise<T>): Promise<T> {
  const store = await openStore({ dataDir: config.dataDir, databaseUrl: config.databaseUrl });
  try {
    return await fn(new ClientRegistry(store));
  } finally {
    await store.close();
  }
}

function userContextOf(o: ClientAddOptions): 'self' | 'aggregator' | undefined {
  if (o.aggregator && !o.assertUserContext) throw new ClientInputError('--aggregator goes with --assert-user-context');
  return o.assertUserContext ? (o.aggregator ? 'aggregator' : 'self') : undefined;
}

/** `carevault client add`: registers a client and, for certificate methods, writes its certificate and key. */
export async function addClient(config: Config, clientId: string, o: ClientAddOptions) {
  const auth = oneOf('--auth', o.auth, AUTH_METHODS) as AuthMethod;
  const outDir = resolve(o.out ?? join(config.dataDir, 'clients'));
  let selfSignedCertPem: string | undefined;
  let issued: { certPem: string; keyPem: string } | undefined;
  if (o.cert && auth !== 'self_signed_tls_client_auth') {
    throw new ClientInputError(
      `--cert goes with --auth self_signed_tls_client_auth; ${auth === 'tls_client_auth' ? 'a tls_client_auth client gets a certificate from the platform CA' : `not ${auth}`}`,
    );
  }
  if (auth === 'self_signed_tls_client_auth') {
    if (o.cert) {
      if (!existsSync(o.cert)) throw new ClientInputError(`file not found: ${o.cert}`);
      selfSignedCertPem = readFileSync(o.cert, 'utf8');
    } else {
      issued = await createSelfSigned(clientId, 397);
      selfSignedCertPem = issued.certPem;
    }
  }
  const jwks = o.jwks ? (readJson(o.jwks) as { keys: JWK[] }) : undefined;
  const result = await withRegistry(config, (registry) =>
    registry.register({
      clientId,
      auth,
      scopes: (o.scope ?? '').split(' ').filter(Boolean),
      orgOid: o.orgOid,
      orgName: o.orgName,
      orgGln: o.orgGln,
      accountUrn: o.accountUrn,
      roles: o.role,
      purposeOfUse: o.purposeOfUse,
      jwks,
      jwksUri: o.jwksUri,
      selfSignedCertPem,
      redirectUris: o.redirectUri,
      name: o.name,
      tokenFormat: oneOf('--token-format', o.tokenFormat, ['jwt', 'opaque'] as const),
      tokenAlg: oneOf('--token-alg', o.tokenAlg, ['ES256', 'RS256'] as const),
      resourceServer: o.resourceServer,
      userContext: userContextOf(o),
      samlBearer: o.samlBearer,
    }),
  );
  const output: Record<string, string> = { client_id: result.clientId };
  if (result.clientSecret) output.client_secret = result.clientSecret;
  if (auth === 'tls_client_auth') {
    const pki = await withInitLock(config.dataDir, () =>
      ensureDevPki(config.dataDir, [new URL(config.baseUrl).hostname]),
    );
    // Seed 000: registration results in a client certificate for the technical user (CN = client_id).
    issued = await issueLeaf(pki.ca, { commonName: clientId, usage: 'client', validDays: 397 });
    output.ca = pki.caPath;
  }
  if (issued) {
    mkdirSync(outDir, { recursive: true, mode: 0o700 });
    // A CARA client id may hold a `/`; the file name must not.
    const file = clientId.replace(/\//g, '_');
    output.cert = join(outDir, `${file}.pem`);
    output.key = join(outDir, `${file}-key.pem`);
    writeSecretFile(output.cert, issued.certPem, 0o644);
    writeSecretFile(output.key, issued.keyPem);
  }
  return output;
}

export async function listClients(config: Config, clientId?: string) {
  return withRegistry(config, async (registry) => {
    const found = await registry.describe(clientId);
    if (clientId && found.length === 0) throw new ClientInputError(`client "${clientId}" not found`);
    return clientId ? found[0] : found;
  });
}

export async function setClientDisabled(config: Config, clientId: string, disabled: boolean) {
  return withRegistry(config, async (registry) => {
    if (!(await registry.setDisabled(clientId, disabled))) throw new ClientInputError(`client "${clientId}" not found`);
    return { client_id: clientId, disabled };
  });
}
