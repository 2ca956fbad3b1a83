import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { freePort } from '@carevault/server/testing';
import { BIN, type ServeChild, serveChild, withStore } from '@carevault/server/testing/serve';
import { FhirClient, TokenManager } from '../../src/index.ts';
import { type ClosableFetch, tlsFetch } from '../../src/node.ts';
import { FaultProxy } from './fault-proxy.ts';

const run = promisify(execFile);
export const FIXTURES = fileURLToPath(new URL('../../../../fixtures/', import.meta.url));
export const DENISHA = join(FIXTURES, 'synthea', 'Denisha680_Keeling57_6a93e0ad-9bd0-6d85-34a7-015186f7880a.json');
export const SCP_BUNDLE = join(FIXTURES, 'cara-scp', 'shared-care-plan.json');
export const EHR_NDJSON = join(FIXTURES, 'cara-scp', 'ehr-observations.ndjson');
export const MPI_ID = 'urn:cara:mpi_id:2.16.756.5.30.1.127.3.10.3/0d7c8f1e-2b3a-4c5d-8e9f-0a1b2c3d4e5f';
export const CLIENT_ID = 'bestclinic-tcu';
export const CERT_HEADER = 'x-ssl-client-cert';

/** A CARA-like platform: one `carevault serve` process behind a fault-injecting TLS proxy, seeded by the CLI. */
export interface Cara {
  dataDir: string;
  issuer: string;
  ca: string;
  cert: string;
  key: string;
  certPath: string;
  keyPath: string;
  caPath: string;
  proxy: FaultProxy;
  server: ServeChild;
  admin(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export async function startCara(options: { env?: Record<string, string> } = {}): Promise<Cara> {
  const dataDir = mkdtempSync(join(tmpdir(), 'carevault-cara-'));
  const admin = async (...args: string[]) =>
    (
      await run(process.execPath, [BIN, ...args, '--data-dir', dataDir], {
        timeout: 120_000,
        env: withStore(['--data-dir', dataDir]),
      })
    ).stdout;
  await admin(
    'client',
    'add',
    CLIENT_ID,
    '--auth',
    'tls_client_auth',
    '--scope',
    'system/*.cruds ns:cara:authx.Reader',
    '--org-oid',
    '2.16.756.5.30.1.178',
    '--out',
    join(dataDir, 'certs'),
  );
  await admin('account', 'add', '--urn', 'urn:cara:account:alice_1234', '--mpi-id', MPI_ID);
  await admin('grant', 'add', '--partition', 'alice_1234', '--client', CLIENT_ID, '--scope', 'system/*.cruds');
  await admin('import', DENISHA, SCP_BUNDLE, '--partition', 'alice_1234');
  const [serverPort, proxyPort] = [await freePort(), await freePort()];
  const issuer = `https://localhost:${proxyPort}`;
  const server = await serveChild(
    ['--port', String(serverPort), '--base-url', issuer, '--trusted-cert-header', CERT_HEADER, '--data-dir', dataDir],
    { env: { ...process.env, CAREVAULT_LOG_LEVEL: 'warn', ...options.env } },
  );
  if (!server.output().stdout.includes('carevault is running')) {
    throw new Error(`carevault serve did not start: ${server.output().stderr}`);
  }
  const pki = join(dataDir, 'pki');
  const ca = readFileSync(join(pki, 'ca.pem'), 'utf8');
  const proxy = await new FaultProxy({
    upstream: `https://127.0.0.1:${serverPort}`,
    cert: readFileSync(join(pki, 'server.pem'), 'utf8'),
    key: readFileSync(join(pki, 'server-key.pem'), 'utf8'),
    ca,
    certHeader: CERT_HEADER,
  }).start(proxyPort);
  const certPath = join(dataDir, 'certs', `${CLIENT_ID}.pem`);
  const keyPath = join(dataDir, 'certs', `${CLIENT_ID}-key.pem`);
  return {
    dataDir,
    issuer,
    ca,
    caPath: join(pki, 'ca.pem'),
    certPath,
    keyPath,
    cert: readFileSync(certPath, 'utf8'),
    key: readFileSync(keyPath, 'utf8'),
    proxy,
    server,
    admin,
    async stop() {
      await proxy.stop();
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The CARA client's mTLS fetch, and a FhirClient on the vault alice_1234 with its tls_client_auth tokens. */
export function caraVaultClient(cara: Cara): { fetch: ClosableFetch; client: FhirClient } {
  const fetch = tlsFetch({ ca: cara.ca, cert: cara.cert, key: cara.key });
  const tokens = new TokenManager({
    issuer: cara.issuer,
    clientId: CLIENT_ID,
    auth: { method: 'tls_client_auth' },
    fetch,
  });
  return { fetch, client: new FhirClient({ baseUrl: `${cara.issuer}/fhir/alice_1234`, tokens, fetch }) };
}
