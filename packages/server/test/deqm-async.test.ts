import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Agent, fetch } from 'undici';
import { PROPORTION, patientsOf, submission } from './helpers/deqm.ts';
import { freePort } from './helpers/platform.ts';
import { type ServeChild, serveChild } from './helpers/serve.ts';
import { ok } from './helpers/zorgviewer.ts';

// Issue 12 §2: an asynchronous submission (Prefer: respond-async) is a persisted job. The node is killed with
// SIGKILL while the job waits for the program server; a new node on the same data directory finishes it, and the
// data is stored exactly once.

const ORG_OID = '2.16.840.1.113883.2.4.3.8';
const dir = mkdtempSync(join(tmpdir(), 'carevault-async-'));
const held: ServerResponse[] = [];
let answer = false;
let asked = 0;
const program = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    asked++;
    if (!answer) {
      held.push(res);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"allow":true}');
  });
});
let node: ServeChild | undefined;
let dispatcher: Agent | undefined;
/** A request to the vault with the clinic's token (set up by the first test). */
let call: (
  path: string,
  init?: { method?: string; body?: string; headers?: Record<string, string> },
) => ReturnType<typeof fetch>;
let submitOne: () => ReturnType<typeof fetch>;
after(async () => {
  await node?.stop();
  await dispatcher?.close();
  for (const r of held) r.destroy();
  program.closeAllConnections();
  program.close();
  rmSync(dir, { recursive: true, force: true });
});

test('a job accepted by a node that is killed is finished by the next node, once', async () => {
  const programPort = await freePort();
  await new Promise<void>((resolve) => program.listen(programPort, '127.0.0.1', resolve));
  const port = await freePort();
  const args = ['--data-dir', dir, '--port', String(port), '--program-server', `http://127.0.0.1:${programPort}/`];
  node = await serveChild(args);
  await ok(dir, 'partition', 'add', 'quality');
  const { client_secret } = await ok<{ client_secret: string }>(
    dir,
    'client',
    'add',
    'clinic',
    '--auth',
    'client_secret_basic',
    '--scope',
    'system/*.cruds',
    '--org-oid',
    ORG_OID,
  );
  await ok(dir, 'grant', 'add', '--partition', 'quality', '--client', 'clinic', '--scope', 'system/*.cruds');
  await ok(dir, 'import', PROPORTION.bundle, '--partition', 'quality');
  dispatcher = new Agent({ connect: { ca: readFileSync(join(dir, 'pki', 'ca.pem'), 'utf8') } });
  const base = `https://localhost:${port}`;
  const tokenRes = await fetch(`${base}/oauth/token`, {
    method: 'POST',
    dispatcher,
    headers: {
      authorization: `Basic ${Buffer.from(`clinic:${client_secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: 'grant_type=client_credentials',
  });
  const { access_token } = (await tokenRes.json()) as { access_token: string };
  call = (path, init = {}) =>
    fetch(path.startsWith('https:') ? path : `${base}/fhir/quality${path}`, {
      ...init,
      dispatcher,
      headers: { authorization: `Bearer ${access_token}`, ...init.headers },
    });
  const org = {
    resourceType: 'Organization',
    id: 'umcg',
    identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:oid:${ORG_OID}` }],
  };
  const put = await call('/Organization/umcg', {
    method: 'PUT',
    body: JSON.stringify(org),
    headers: { 'content-type': 'application/fhir+json' },
  });
  assert.equal(put.status, 201);

  const pt = patientsOf('proportion-boolean')[0] as ReturnType<typeof patientsOf>[number];
  submitOne = () =>
    call(`/Measure/${PROPORTION.id}/$submit-data`, {
      method: 'POST',
      body: JSON.stringify(submission(PROPORTION.url, 'Organization/umcg', pt)),
      headers: { 'content-type': 'application/fhir+json', prefer: 'respond-async' },
    });
  const accepted = await submitOne();
  assert.equal(accepted.status, 202);
  const status = accepted.headers.get('content-location') as string;
  assert.match(status, /\/fhir\/quality\/\$submit-data-status\/[0-9a-f-]{36}$/);

  // The job is running: it waits for the program server, which does not answer yet.
  for (let i = 0; i < 200 && asked === 0; i++) await new Promise((r) => setTimeout(r, 25));
  assert.equal(asked, 1);
  const running = await call(status);
  assert.equal(running.status, 202);
  assert.match(String(running.headers.get('x-progress')), /in progress/);

  await node.stop('SIGKILL');
  answer = true;
  node = await serveChild(args);
  let done: Awaited<ReturnType<typeof call>> | undefined;
  for (let i = 0; i < 400; i++) {
    const r = await call(status);
    if (r.status !== 202) {
      done = r;
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.equal(done?.status, 200);
  const bundle = (await done?.json()) as { type: string; entry: unknown[] };
  assert.equal(bundle.type, 'transaction-response');
  assert.equal(bundle.entry.length, 1 + pt.resources.length);
  assert.equal(asked, 2);
  // Exactly one copy: one MeasureReport, one Provenance for the job.
  const reports = (await (await call('/MeasureReport?_summary=count')).json()) as { total: number };
  assert.equal(reports.total, 1);
  const provenances = (await (await call('/Provenance?_summary=count')).json()) as { total: number };
  assert.equal(provenances.total, 1);

  // Another client, or the same job id in another vault, learns nothing about the job.
  assert.equal((await call(status.replace('/quality/', '/elsewhere/'))).status, 404);
});

test('eight submissions of a client may wait or run at a time; a ninth is 429 until they are done', async () => {
  // The program server holds its answers again: the first job waits for it, the others queue behind it.
  answer = false;
  const statuses: string[] = [];
  for (let i = 0; i < 8; i++) {
    const r = await submitOne();
    assert.equal(r.status, 202, await r.text());
    statuses.push(r.headers.get('content-location') as string);
  }
  const refused = await submitOne();
  assert.equal(refused.status, 429);
  assert.equal(refused.headers.get('retry-after'), '5');
  const outcome = (await refused.json()) as { issue: { code: string; diagnostics: string }[] };
  assert.equal(outcome.issue[0]?.code, 'throttled');
  assert.match(outcome.issue[0]?.diagnostics ?? '', /8 asynchronous submissions of this client wait or run/);

  // DELETE cancels one still queued; of the one running (waiting for the program server) only the record goes.
  const cancel = async (status: string) => {
    const r = await call(status, { method: 'DELETE' });
    assert.equal(r.status, 202);
    return ((await r.json()) as { issue: { diagnostics: string }[] }).issue[0]?.diagnostics;
  };
  assert.match(String(await cancel(statuses.pop() as string)), /cancelled: nothing of it was stored/);
  const requeued = await submitOne();
  assert.equal(requeued.status, 202, 'a cancelled submission no longer counts');
  statuses.push(requeued.headers.get('content-location') as string);
  const running = statuses.shift() as string;
  assert.match(String(await cancel(running)), /what it stored stays in the vault/);
  assert.equal((await call(running)).status, 404);
  assert.equal((await call(running, { method: 'DELETE' })).status, 404);

  answer = true;
  for (const r of held.splice(0)) r.writeHead(200, { 'content-type': 'application/json' }).end('{"allow":true}');
  for (const status of statuses) {
    let r = await call(status);
    for (let i = 0; i < 400 && r.status === 202; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      r = await call(status);
    }
    assert.equal(r.status, 200, await r.text());
  }
  assert.equal(asked, 2 + 8, 'every job but the cancelled one asked the program server, once');
  const again = await submitOne();
  assert.equal(again.status, 202, 'finished submissions no longer count');

  // A finished submission's outcome is kept 24 hours after it was accepted, then removed at the next submission.
  const file = join(dir, 'jobs', `${(statuses[0] as string).split('/').pop()}.job.json`);
  const job = JSON.parse(readFileSync(file, 'utf8'));
  writeFileSync(file, JSON.stringify({ ...job, acceptedAt: new Date(Date.now() - 25 * 3600_000).toISOString() }));
  assert.equal((await call(statuses[1] as string)).status, 200);
  assert.equal((await submitOne()).status, 202);
  assert.equal((await call(statuses[0] as string)).status, 404, 'expired');
  assert.equal(existsSync(file), false);
  assert.equal((await call(statuses[1] as string)).status, 200, 'not yet expired');
});
