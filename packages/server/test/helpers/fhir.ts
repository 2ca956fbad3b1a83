import { join } from 'node:path';
import { addGrant } from '../../src/vault/grants.ts';
import { addAccount, addPartition } from '../../src/vault/partitions.ts';
import { readPair, type TestPlatform } from './platform.ts';

export interface Caller {
  token: string;
  pair?: { cert: string; key: string };
}

/** A client_secret_basic client with its token. */
export async function secretClient(
  p: TestPlatform,
  clientId: string,
  scope: string,
  extra: Record<string, unknown> = {},
): Promise<Caller> {
  const { client_secret } = await p.register(clientId, { auth: 'client_secret_basic', scope, ...extra });
  return { token: await tokenWithSecret(p, clientId, client_secret as string) };
}

export async function tokenWithSecret(
  p: TestPlatform,
  clientId: string,
  secret: string,
  body = 'grant_type=client_credentials',
): Promise<string> {
  const res = await p.fetch(p.tokenUrl, {
    method: 'POST',
    dispatcher: p.agent(),
    headers: {
      authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body,
  });
  const json = (await res.json()) as { access_token?: string };
  if (!json.access_token) throw new Error(`no token: ${JSON.stringify(json)}`);
  return json.access_token;
}

/** A tls_client_auth technical user (seed 000) with its certificate-bound token. */
export async function mtlsClient(
  p: TestPlatform,
  clientId: string,
  scope: string,
  extra: Record<string, unknown> = {},
): Promise<Caller> {
  const pair = readPair(
    await p.register(clientId, { auth: 'tls_client_auth', scope, out: join(p.dataDir, 'certs'), ...extra }),
  );
  const res = await p.fetch(p.tokenUrl, {
    method: 'POST',
    dispatcher: p.agent(pair),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: `grant_type=client_credentials&client_id=${clientId}`,
  });
  const json = (await res.json()) as { access_token: string };
  return { token: json.access_token, pair };
}

export const account = (p: TestPlatform, urn: string) => addAccount(p.store, { accountUrn: urn });
export const partition = (p: TestPlatform, name: string) => addPartition(p.store, name);
export const grant = (p: TestPlatform, input: { partition: string; client?: string; orgOid?: string; scope: string }) =>
  addGrant(p.store, input);

/** A FHIR request as a caller; answers status, headers, the parsed body and the raw text. */
/** A client with a secret and `scope`, granted that scope on each of `partitions`; its token. */
export async function grantedClient(
  p: TestPlatform,
  clientId: string,
  scope: string,
  partitions: string[],
): Promise<Caller> {
  const caller = await secretClient(p, clientId, scope);
  for (const partition of partitions) await grant(p, { partition, client: clientId, scope });
  return caller;
}

export async function fhir(
  p: TestPlatform,
  caller: Caller | undefined,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const res = await p.fetch(`${p.fhirBase}${path}`, {
    method,
    dispatcher: p.agent(caller?.pair),
    headers: {
      ...(caller ? { authorization: `Bearer ${caller.token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/fhir+json' } : {}),
      ...headers,
    },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = text ? JSON.parse(text) : {};
  } catch {}
  return { status: res.status, headers: res.headers, json, text };
}

/** The AuditEvents the audit endpoint answers `auditor` (AuditEvent read) for `query`; a refusal throws. */
export async function auditEvents<E = Record<string, unknown>>(
  p: TestPlatform,
  auditor: Caller,
  query: string,
): Promise<E[]> {
  const res = await p.fetch(`${p.base}/audit/AuditEvent?${query}`, {
    dispatcher: p.agent(),
    headers: { authorization: `Bearer ${auditor.token}` },
  });
  if (res.status !== 200) throw new Error(`audit search ${query}: ${res.status} ${await res.text()}`);
  return (((await res.json()) as { entry?: { resource: E }[] }).entry ?? []).map((e) => e.resource);
}
