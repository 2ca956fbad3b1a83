import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { AuditEvent } from 'fhir/r4.js';
import { addClient } from '../../src/admin/clients.ts';
import { importCommand } from '../../src/admin/import.ts';
import { withStore as withAdminStore } from '../../src/admin/vault.ts';
import type { Config } from '../../src/config/index.ts';
import { addGrant } from '../../src/vault/grants.ts';
import { addPartition } from '../../src/vault/partitions.ts';
import { viewerConsentAdd, viewerInit, viewerSourceAdd } from '../../src/viewer/admin.ts';
import { startPlatform, type TestPlatform } from './platform.ts';
import { BIN, withStore } from './serve.ts';

// Seed 001's network for tests: a viewer hub and two source systems, three real HTTPS servers set up with the
// contract commands (the Zorgviewer test files share it).
const run = promisify(execFile);
export const FIXTURES = fileURLToPath(new URL('../../../../fixtures/zorgviewer/', import.meta.url));

export const TJONGERSCHANS = '2.16.528.1.1007.3.3.15123';
export const UMCG = '2.16.840.1.113883.2.4.3.8';
export const RIVO = '2.16.840.1.113883.2.4.3.213';
/** Test case 1: T.E.S.T. Zorgviewer, at both sources. */
export const BSN = '000004881';
/** J. Fictief: once at source A, twice at source B (after an SEH admission). */
export const BSN_TWICE = '999911120';
/** A valid BSN no source knows. */
export const BSN_NOWHERE = '123456782';
export const ARTS = { id: '177578', role: '62247001', org: TJONGERSCHANS, name: 'L. Arts' };
/** The workflow id of the Task at source A (Zorgplatform launch), `for` T.E.S.T. Zorgviewer. */
export const WORKFLOW_ID = 'a84f5229-c804-4627-8b80-489ae3ed6a51';

export function cli(dataDir: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return cliWithEnv({}, dataDir, ...args);
}

/** `cli` with these environment variables set as well (the platform's settings). */
export async function cliWithEnv(
  env: Record<string, string>,
  dataDir: string,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args, '--data-dir', dataDir], {
      timeout: 120_000,
      maxBuffer: 64 * 1024 * 1024,
      env: withStore(['--data-dir', dataDir], { ...process.env, ...env }),
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

export async function ok<T = Record<string, unknown>>(dataDir: string, ...args: string[]): Promise<T> {
  const r = await cli(dataDir, ...args);
  assert.equal(r.code, 0, `carevault ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

export interface ViewerInit {
  clientId: string;
  jwksUri: string;
  jwksFile: string;
  directory: string;
  consent: string;
}

export interface ZorgviewerNetwork {
  hub: TestPlatform;
  srcA: TestPlatform;
  srcB: TestPlatform;
  init: ViewerInit;
  tmp: string;
  /** `viewer source add` on the hub for a source platform's `ehr` vault, trusting that platform's CA. */
  addSource(p: TestPlatform, name: string, oid: string, style: string): Promise<{ endpoint: string }>;
  /** `viewer consent add` for one BSN and organization (extra flags: --status, --start, --end). */
  consent(bsn: string, orgOid: string, ...flags: string[]): Promise<unknown>;
  /** The AuditEvents a platform wrote under one correlation id. */
  eventsOf(p: TestPlatform, correlationId: string): Promise<AuditEvent[]>;
  stop(): Promise<void>;
}

/**
 * The admin commands the network is set up with: as processes (the contract, as an operator runs them), or the
 * same functions in this process for test files that prove something else and should not pay a process each.
 */
type Admin = <T>(p: { dataDir: string; config: Config }, ...args: string[]) => Promise<T>;

const asProcess: Admin = (p, ...args) => ok(p.dataDir, ...args);

const inProcess: Admin = async <T>(p: { config: Config }, ...args: string[]): Promise<T> => {
  const flag = (name: string) => args[args.indexOf(name) + 1] as string;
  const c = p.config;
  const key = args[0] === 'import' ? 'import' : args.slice(0, 2).join(' ');
  const run = async (): Promise<unknown> => {
    switch (key) {
      case 'partition add':
        return withAdminStore(c, (s) => addPartition(s, args[2] as string));
      case 'import':
        return importCommand(c, [args[1] as string], flag('--partition'));
      case 'grant add':
        return withAdminStore(c, (s) =>
          addGrant(s, { partition: flag('--partition'), client: flag('--client'), scope: flag('--scope') }),
        );
      case 'viewer init':
        return viewerInit(c, { orgOid: flag('--org-oid'), orgName: flag('--org-name') });
      case 'viewer consent':
        return viewerConsentAdd(c, {
          bsn: flag('--bsn'),
          orgOid: flag('--org-oid'),
          ...(args.includes('--status') ? { status: flag('--status') } : {}),
          ...(args.includes('--start') ? { start: flag('--start') } : {}),
          ...(args.includes('--end') ? { end: flag('--end') } : {}),
        });
      case 'viewer source':
        return viewerSourceAdd(c, {
          name: flag('--name'),
          orgOid: flag('--org-oid'),
          fhirBase: flag('--fhir-base'),
          clientId: flag('--client-id'),
          ca: flag('--ca'),
          style: flag('--style'),
        });
      case 'client add':
        return addClient(c, args[2] as string, {
          auth: flag('--auth'),
          scope: flag('--scope'),
          ...(args.includes('--jwks') ? { jwks: flag('--jwks') } : { jwksUri: flag('--jwks-uri') }),
          assertUserContext: true,
          aggregator: true,
        });
      default:
        throw new Error(`no in-process form of ${key}`);
    }
  };
  const out = await run();
  // As the CLI prints it: JSON.
  return JSON.parse(JSON.stringify(out)) as T;
};

/** A source system: its vault with the fixture data, and the viewer registered by its JWKS. */
async function setUpSource(admin: Admin, p: TestPlatform, fixture: string, jwks: string[]) {
  await admin(p, 'partition', 'add', 'ehr');
  await admin(p, 'import', join(FIXTURES, fixture), '--partition', 'ehr');
  await admin(
    p,
    ...['client', 'add', 'rivo-zorgviewer', '--auth', 'private_key_jwt', ...jwks],
    ...['--assert-user-context', '--aggregator', '--scope', 'system/*.rs'],
  );
  await admin(p, 'grant', 'add', '--partition', 'ehr', '--client', 'rivo-zorgviewer', '--scope', 'system/*.rs');
}

export async function startZorgviewerNetwork(o: { inProcess?: boolean } = {}): Promise<ZorgviewerNetwork> {
  const admin = o.inProcess ? inProcess : asProcess;
  const hub = await startPlatform();
  // Source B fetches the viewer's JWKS from the hub, whose certificate its own dev CA did not issue.
  const trustHub = { env: { CAREVAULT_OUTBOUND_CA: join(hub.dataDir, 'pki', 'ca.pem') } };
  const [srcA, srcB] = await Promise.all([startPlatform(), startPlatform({}, trustHub)]);
  const init = await admin<ViewerInit>(hub, 'viewer', 'init', '--org-oid', RIVO, '--org-name', 'RIVO-Noord');
  // One source registers the viewer's key inline, the other fetches the published JWKS.
  await Promise.all([
    setUpSource(admin, srcA, 'source-a.json', ['--jwks', init.jwksFile]),
    setUpSource(admin, srcB, 'source-b.json', ['--jwks-uri', init.jwksUri]),
  ]);
  const addSource = (p: TestPlatform, name: string, oid: string, style: string) =>
    admin<{ endpoint: string }>(
      hub,
      ...['viewer', 'source', 'add', '--name', name, '--org-oid', oid, '--fhir-base', `${p.base}/fhir/ehr`],
      ...['--client-id', 'rivo-zorgviewer', '--ca', join(p.dataDir, 'pki', 'ca.pem'), '--style', style],
    );
  await addSource(srcA, 'Tjongerschans', TJONGERSCHANS, 'generic');
  await addSource(srcB, 'UMCG', UMCG, 'epic');
  const tmp = mkdtempSync(join(tmpdir(), 'carevault-zv-'));
  return {
    hub,
    srcA,
    srcB,
    init,
    tmp,
    addSource,
    consent: (bsn, orgOid, ...flags) =>
      admin(hub, 'viewer', 'consent', 'add', '--bsn', bsn, '--org-oid', orgOid, ...flags),
    async eventsOf(p, correlationId) {
      const { events } = await p.store.audit.search({ correlationId, limit: 1000, offset: 0 });
      return events.map((e) => JSON.parse(e) as AuditEvent);
    },
    async stop() {
      await Promise.all([hub.stop(), srcA.stop(), srcB.stop()]);
      rmSync(tmp, { recursive: true, force: true });
    },
  };
}
