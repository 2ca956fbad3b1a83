import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { addClient, type ClientAddOptions } from '../../src/admin/clients.ts';
import { type Config, loadConfig, SERVER_INFO_FILE } from '../../src/config/index.ts';
import { buildPlatform, type Platform } from '../../src/http/app.ts';
import { storeEnv } from './store.ts';

export { storeEnv, TEST_STORE } from './store.ts';

/** Ports handed out by this process: the kernel may offer a just-released port again to a concurrent caller. */
const handedOut = new Set<number>();

export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const { port } = s.address() as { port: number };
        s.close(() => resolve(port));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

export interface TestPlatform extends Platform {
  base: string;
  tokenUrl: string;
  dataDir: string;
  ca: string;
  /** An HTTPS agent that trusts the platform CA, optionally presenting a client certificate. */
  agent(cert?: { cert: string; key: string }): Agent;
  fetch: typeof undiciFetch;
  register(clientId: string, options: ClientAddOptions): Promise<Record<string, string>>;
  stop(): Promise<void>;
}

/**
 * A real platform on 127.0.0.1 with a fresh data dir, for one test file; or, given `nodeOf`, another node of that
 * platform: its data dir, database and issuer (its tokens hold here), on a port of its own.
 */
export async function startPlatform(
  overrides: Partial<Record<string, string>> = {},
  options: { logStream?: NodeJS.WritableStream; env?: Record<string, string>; nodeOf?: TestPlatform } = {},
): Promise<TestPlatform> {
  const dataDir = options.nodeOf?.dataDir ?? mkdtempSync(join(tmpdir(), 'carevault-test-'));
  const port = await freePort();
  const config: Config = loadConfig(
    { port, host: '127.0.0.1', dataDir, logLevel: 'silent', baseUrl: options.nodeOf?.issuer, ...overrides },
    { ...storeEnv(dataDir), ...options.env },
  );
  const platform = await buildPlatform(config, options);
  await platform.app.listen({ port, host: '127.0.0.1' });
  // As `serve` does: admin commands on this data dir then print and use this server's URLs.
  if (!options.nodeOf) writeFileSync(join(dataDir, SERVER_INFO_FILE), JSON.stringify({ baseUrl: platform.issuer }));
  const ca = readFileSync(join(dataDir, 'pki', 'ca.pem'), 'utf8');
  const agents: Agent[] = [];
  // Where this node listens: a second node shares the first one's issuer, as nodes behind one load balancer do.
  const base = options.nodeOf ? `https://localhost:${port}` : platform.issuer;
  return {
    ...platform,
    fhirBase: `${base}/fhir`,
    base,
    tokenUrl: `${base}/oauth/token`,
    dataDir,
    ca,
    agent(cert) {
      const a = new Agent({ connect: { ca, ...(cert ? { cert: cert.cert, key: cert.key } : {}) } });
      agents.push(a);
      return a;
    },
    fetch: undiciFetch,
    register: (clientId, options) => addClient(config, clientId, options),
    async stop() {
      await Promise.all(agents.map((a) => a.close()));
      await platform.close();
      if (!options.nodeOf) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export function readPair(out: Record<string, string>): { cert: string; key: string } {
  return { cert: readFileSync(out.cert as string, 'utf8'), key: readFileSync(out.key as string, 'utf8') };
}

export function decodeJwt(token: string): { header: Record<string, unknown>; payload: Record<string, unknown> } {
  const [h, p] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h as string, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(p as string, 'base64url').toString()),
  };
}
