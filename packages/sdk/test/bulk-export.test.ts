import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  BulkExportError,
  type Bundle,
  bulkExport,
  cancelExport,
  exportDeletions,
  exportErrors,
  exportedResources,
  FhirClient,
  FhirResponseError,
  type OperationOutcome,
  type Resource,
  TokenManager,
} from '../src/index.ts';
import { type ClosableFetch, tlsFetch } from '../src/node.ts';
import { type Cara, CLIENT_ID, DENISHA, startCara } from './helpers/cara.ts';

// The SDK's Bulk Data export against a real carevault behind the fault-injecting proxy: throttled and failing
// status polls, a dropped download, a job that outlives the client's patience.
const CLIENT_BIN = fileURLToPath(new URL('../bin/carevault-client.js', import.meta.url));
const run = promisify(execFile);
let cara: Cara;
let fetch: ClosableFetch;
let fhir: FhirClient;
let tokens: TokenManager;
const retried: string[] = [];

before(async () => {
  cara = await startCara();
  fetch = tlsFetch({ ca: cara.ca, cert: cara.cert, key: cara.key });
  tokens = new TokenManager({
    issuer: cara.issuer,
    clientId: CLIENT_ID,
    auth: { method: 'tls_client_auth' },
    fetch,
  });
  fhir = new FhirClient({
    baseUrl: `${cara.issuer}/fhir/alice_1234`,
    tokens,
    fetch,
    retry: { baseDelayMs: 10, maxDelayMs: 2000, maxAttempts: 5 },
    onRetry: (i) => retried.push(`${i.method} ${new URL(i.url).pathname} ${i.reason}`),
  });
});
after(async () => {
  await fetch.close();
  await cara.stop();
});

const count = async (type: string) => ((await fhir.search(type, { _summary: 'count' })) as Bundle).total;
const all = async <T = Resource>(it: AsyncIterable<T>) => {
  const out: T[] = [];
  for await (const r of it) out.push(r);
  return out;
};

describe('bulkExport', () => {
  test('through throttled and failing status polls and a dropped download, every resource arrives once', async () => {
    cara.proxy.fault = (req) => {
      if (req.url.includes('$export-status/') && !retried.some((r) => r.includes('429')))
        return { kind: 'status', status: 429, retryAfter: 0 };
      if (req.url.includes('$export-status/') && !retried.some((r) => r.includes('503')))
        return { kind: 'status', status: 503 };
      if (req.url.includes('$export-file/') && !retried.some((r) => r.includes('$export-file')))
        return { kind: 'drop' };
      return { kind: 'pass' };
    };
    try {
      const { manifest, statusUrl } = await bulkExport(fhir, { types: ['Patient', 'Observation'], pollIntervalMs: 20 });
      assert.match(statusUrl, /\$export-status\//);
      assert.equal(manifest.requiresAccessToken, true);
      const patients = await all(exportedResources(fhir, manifest, 'Patient'));
      const observations = await all(exportedResources(fhir, manifest, 'Observation'));
      assert.equal(observations.length, await count('Observation'));
      assert.equal(new Set(observations.map((o) => o.id)).size, observations.length);
      const denisha = (JSON.parse(readFileSync(DENISHA, 'utf8')) as { entry: { resource: Resource }[] }).entry.find(
        (e) => e.resource.resourceType === 'Patient',
      )?.resource;
      assert.deepEqual(
        patients.map((p) => p.id),
        [denisha?.id],
      );
      assert.ok(
        retried.some((r) => r.includes('429')),
        retried.join('\n'),
      );
      assert.ok(
        retried.some((r) => r.includes('503')),
        retried.join('\n'),
      );
      assert.ok(
        retried.some((r) => r.includes('$export-file')),
        retried.join('\n'),
      );
    } finally {
      cara.proxy.fault = () => ({ kind: 'pass' });
    }
  });

  test('a download that breaks off or stalls mid-file goes on after its last line: every resource once', async () => {
    const { manifest } = await bulkExport(fhir, { types: ['Observation'], pollIntervalMs: 20 });
    const expected = await all(exportedResources(fhir, manifest));
    const size = new TextEncoder().encode(expected.map((r) => `${JSON.stringify(r)}\n`).join('')).length;
    assert.ok(size > 10_000, `a file of ${size} bytes`);
    let downloads = 0;
    cara.proxy.fault = (req) => {
      if (!req.url.includes('$export-file/')) return { kind: 'pass' };
      downloads++;
      // Mid-line; then a stall longer than the client's timeout; then the whole file, slower than that timeout
      // in all, but never silent for as long.
      if (downloads === 1) return { kind: 'truncate', bytes: 3001 };
      if (downloads === 2) return { kind: 'truncate', bytes: 9_876, stallMs: 3000 };
      return { kind: 'drip', chunks: 8, everyMs: 150 };
    };
    const impatient = new FhirClient({ baseUrl: `${cara.issuer}/fhir/alice_1234`, tokens, fetch, timeoutMs: 500 });
    const got: Resource[] = [];
    const started = Date.now();
    try {
      for await (const r of exportedResources(impatient, manifest)) got.push(r);
    } finally {
      cara.proxy.fault = () => ({ kind: 'pass' });
    }
    assert.ok(Date.now() - started > 1000);
    assert.equal(downloads, 3, 'two breaks, each resumed once');
    assert.deepEqual(got, expected);
  });

  test('a download whose line never ends is refused at that line, and its connection closed', async () => {
    const { manifest } = await bulkExport(fhir, { types: ['Patient'], pollIntervalMs: 20 });
    const closedBefore = cara.proxy.flooded.closed;
    const bytesBefore = cara.proxy.flooded.bytes;
    cara.proxy.fault = (req) => (req.url.includes('$export-file/') ? { kind: 'flood', status: 200 } : { kind: 'pass' });
    try {
      await assert.rejects(
        all(exportedResources(fhir, manifest)),
        (err: Error) =>
          err instanceof BulkExportError && /\$export-file\/.* line 1 is longer than 64 M characters/.test(err.message),
      );
    } finally {
      cara.proxy.fault = () => ({ kind: 'pass' });
    }
    // Held past the limit by no more than what was in flight, then let go.
    for (let i = 0; i < 50 && cara.proxy.flooded.closed === closedBefore; i++)
      await new Promise((r) => setTimeout(r, 20));
    assert.equal(cara.proxy.flooded.closed, closedBefore + 1);
    assert.ok(cara.proxy.flooded.bytes - bytesBefore > 64 * 1024 * 1024);
  });

  test('named patients go as a POST Parameters body; _since leaves out what did not change; a Group export', async () => {
    const patient = (await fhir.search('Patient')).entry?.[0]?.resource as Resource;
    const byPatient = await bulkExport(fhir, {
      level: 'patient',
      patients: [patient.id as string],
      types: ['Patient'],
      pollIntervalMs: 20,
    });
    assert.deepEqual(
      (await all(exportedResources(fhir, byPatient.manifest))).map((r) => r.id),
      [patient.id],
    );
    const kickOff = cara.proxy.seen.filter((s) => s.url.endsWith('/Patient/$export')).at(-1);
    assert.equal(kickOff?.method, 'POST');
    const none = await bulkExport(fhir, { since: new Date(), pollIntervalMs: 20 });
    assert.deepEqual(none.manifest.output, []);
    const group = await fhir.create({
      resourceType: 'Group',
      type: 'person',
      actual: true,
      member: [{ entity: { reference: `Patient/${patient.id}` } }],
    });
    const byGroup = await bulkExport(fhir, {
      level: { group: group.id as string },
      types: ['Patient'],
      pollIntervalMs: 20,
    });
    assert.deepEqual(
      (await all(exportedResources(fhir, byGroup.manifest))).map((r) => r.id),
      [patient.id],
    );
    assert.ok(
      cara.proxy.seen.some((s) => s.url.startsWith(`/fhir/alice_1234/Group/${group.id}/$export?_type=Patient`)),
    );
    assert.deepEqual(await all(exportErrors(fhir, byGroup.manifest)), [], 'nothing was left out');
    // A named patient who is not a member: exported is nothing of it, and the error file says so.
    const named = await bulkExport(fhir, {
      level: { group: group.id as string },
      patients: [patient.id as string, 'nobody'],
      types: ['Patient'],
      pollIntervalMs: 20,
    });
    assert.deepEqual(
      (await all(exportedResources(fhir, named.manifest))).map((r) => r.id),
      [patient.id],
    );
    const errors = (await all(exportErrors(fhir, named.manifest))) as OperationOutcome[];
    assert.deepEqual(
      errors.map((o) => o.issue.map((i) => `${i.severity}: ${i.diagnostics}`)),
      [[`warning: Patient/nobody is not an active member of Group/${group.id}: nothing of it is exported`]],
    );
  });

  test('a _since export names what was deleted since; the CLI keeps it as deleted.ndjson', async () => {
    const observation = { resourceType: 'Observation', status: 'final', code: { text: 'deleted since' } };
    const [gone, kept] = [await fhir.create(observation), await fhir.create(observation)];
    await new Promise((resolve) => setTimeout(resolve, 10));
    const since = new Date();
    await new Promise((resolve) => setTimeout(resolve, 10));
    await fhir.delete('Observation', gone.id as string);
    const { manifest } = await bulkExport(fhir, { since, types: ['Observation'], pollIntervalMs: 20 });
    const deletions = await all(exportDeletions(fhir, manifest));
    assert.deepEqual(
      deletions.map((d) => `${d.type}/${d.id}`),
      [`Observation/${gone.id}`],
    );
    const at = deletions[0]?.deletedAt as string;
    assert.ok(Date.parse(at) > since.getTime(), at);
    assert.deepEqual(manifest.output, [], `${kept.id} did not change`);
    // Without _since the manifest lists no deletions, and the SDK yields none.
    const whole = await bulkExport(fhir, { types: ['Observation'], pollIntervalMs: 20 });
    assert.equal(whole.manifest.deleted, undefined);
    assert.deepEqual(await all(exportDeletions(fhir, whole.manifest)), []);
  });

  test("a refused kick-off is the server's error; an export that outlives timeoutMs names its status URL", async () => {
    await assert.rejects(bulkExport(fhir, { types: ['NotAType'] }), (err: unknown) => {
      assert.ok(err instanceof FhirResponseError);
      assert.equal(err.status, 400);
      assert.match(err.message, /NotAType/);
      return true;
    });
    cara.proxy.fault = (req) =>
      req.url.includes('$export-status/') ? { kind: 'status', status: 202, retryAfter: 0 } : { kind: 'pass' };
    let statusUrl = '';
    try {
      await assert.rejects(
        bulkExport(fhir, { types: ['Patient'], timeoutMs: 300, pollIntervalMs: 50 }),
        (err: unknown) => {
          assert.ok(err instanceof BulkExportError);
          assert.match(err.message, /did not finish in time/);
          statusUrl = err.statusUrl as string;
          return true;
        },
      );
    } finally {
      cara.proxy.fault = () => ({ kind: 'pass' });
    }
    await cancelExport(fhir, statusUrl);
    await assert.rejects(
      fhir.request('GET', statusUrl),
      (err: unknown) => err instanceof FhirResponseError && err.status === 404,
    );
  });
});

describe('carevault-client export', () => {
  async function cli(...args: string[]) {
    const base = [
      'export',
      '--base',
      `${cara.issuer}/fhir/alice_1234`,
      '--issuer',
      cara.issuer,
      '--client-id',
      CLIENT_ID,
    ];
    const tls = ['--cert', cara.certPath, '--key', cara.keyPath, '--ca', cara.caPath];
    try {
      const r = await run(process.execPath, [CLIENT_BIN, ...base, ...tls, ...args], { timeout: 120_000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  }

  test('writes one NDJSON file per exported type and prints the manifest; never over an earlier export', async () => {
    const out = join(cara.dataDir, 'export-out');
    const r = await cli('--out', out, '--type', 'Patient', '--type', 'Condition');
    assert.equal(r.code, 0, r.stderr);
    const manifest = JSON.parse(r.stdout) as { output: { type: string; count: number }[] };
    assert.deepEqual(readdirSync(out).sort(), ['Condition.ndjson', 'Patient.ndjson']);
    assert.equal(statSync(join(out, 'Patient.ndjson')).mode & 0o777, 0o600, 'health data for the owner only');
    for (const f of manifest.output) {
      const lines = readFileSync(join(out, `${f.type}.ndjson`), 'utf8')
        .trim()
        .split('\n');
      assert.equal(lines.length, f.count, f.type);
      assert.equal(lines.length, await count(f.type), f.type);
    }
    const again = await cli('--out', out, '--type', 'Patient');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /Patient\.ndjson exists already/);
    const bad = await cli('--out', out, '--patient', 'x');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--patient needs --patients or --group/);
    // What the server left out is kept beside the data and said on stderr.
    const group = await fhir.create({ resourceType: 'Group', type: 'person', actual: true });
    const left = join(cara.dataDir, 'export-left');
    const r2 = await cli('--out', left, '--group', group.id as string, '--patient', 'nobody', '--type', 'Patient');
    assert.equal(r2.code, 0, r2.stderr);
    assert.deepEqual(readdirSync(left), ['errors.ndjson']);
    assert.match(r2.stderr, new RegExp(`export warning: Patient/nobody is not an active member of Group/${group.id}`));
    const outcome = JSON.parse(readFileSync(join(left, 'errors.ndjson'), 'utf8')) as OperationOutcome;
    assert.equal(outcome.issue[0]?.code, 'not-found');
    // A --since export keeps what was deleted since, as the server's transaction Bundles.
    const since = new Date().toISOString();
    await new Promise((resolve) => setTimeout(resolve, 10));
    const doomed = await fhir.create({ resourceType: 'Condition', subject: { reference: 'Patient/x' } });
    await fhir.delete('Condition', doomed.id as string);
    const incremental = join(cara.dataDir, 'export-since');
    const r3 = await cli('--out', incremental, '--since', since, '--type', 'Condition');
    assert.equal(r3.code, 0, r3.stderr);
    assert.deepEqual(readdirSync(incremental), ['deleted.ndjson']);
    const line = JSON.parse(readFileSync(join(incremental, 'deleted.ndjson'), 'utf8')) as Bundle;
    assert.equal(line.type, 'transaction');
    assert.deepEqual(
      line.entry?.map((e) => e.request),
      [{ method: 'DELETE', url: `Condition/${doomed.id}` }],
    );
    const refused = await cli('--out', join(out, 'x'), '--type', 'Nope');
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /Nope is not an R4 resource type/);
  });
});
