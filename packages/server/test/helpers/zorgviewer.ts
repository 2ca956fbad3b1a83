import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { AuditEvent } from 'fhir/r4.js';
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

export async function cli(
  dataDir: string,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args, '--data-dir', dataDir], {
      timeout: 120_000,
      env: withStore(['--data-dir', dataDir]),
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

/** A source system: its vault with the fixture data, and the viewer registered by its JWKS. */
async function setUpSource(p: TestPlatform, fixture: string, jwks: string[]) {
  await ok(p.dataDir, 'partition', 'add', 'ehr');
  await ok(p.dataDir, 'import', join(FIXTURES, fixture), '--partition', 'ehr');
  await ok(
    p.dataDir,
    ...['client', 'add', 'rivo-zorgviewer', '--auth', 'private_key_jwt', ...jwks],
    ...['--assert-user-context', '--aggregator', '--scope', 'system/*.rs'],
  );
  await ok(p.dataDir, 'grant', 'add', '--partition', 'ehr', '--client', 'rivo-zorgviewer', '--scope', 'system/*.rs');
}

export async function startZorgviewerNetwork(): Promise<ZorgviewerNetwork> {
  const hub = await startPlatform();
  // Source B fetches the viewer's JWKS from the hub, whose certificate its own dev CA did not issue.
  const trustHub = { env: { CAREVAULT_OUTBOUND_CA: join(hub.dataDir, 'pki', 'ca.pem') } };
  const [srcA, srcB] = await Promise.all([startPlatform(), startPlatform({}, trustHub)]);
  const init = await ok<ViewerInit>(hub.dataDir, 'viewer', 'init', '--org-oid', RIVO, '--org-name', 'RIVO-Noord');
  // One source registers the viewer's key inline, the other fetches the published JWKS.
  await Promise.all([
    setUpSource(srcA, 'source-a.json', ['--jwks', init.jwksFile]),
    setUpSource(srcB, 'source-b.json', ['--jwks-uri', init.jwksUri]),
  ]);
  const addSource = (p: TestPlatform, name: string, oid: string, style: string) =>
    ok<{ endpoint: string }>(
      hub.dataDir,
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
      ok(hub.dataDir, 'viewer', 'consent', 'add', '--bsn', bsn, '--org-oid', orgOid, ...flags),
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
