// Asynchronous jobs ($export, $submit-data with Prefer: respond-async) as a node runs them: two at once, so a
// small job does not wait behind a large one, and the waiting ones oldest first.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { type AsyncJob, AsyncJobs } from '../src/fhir/async-jobs.ts';

const dirs: string[] = [];
const queues: { jobs: AsyncJobs<AsyncJob>; openAll(): void }[] = [];
after(() => {
  // Whatever a failed test left waiting is let go, so that the file ends.
  for (const q of queues) {
    q.openAll();
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A queue whose jobs each wait for their gate to open (`open(name)`), recording the order they started in. */
function gatedQueue(workers?: number) {
  const dir = mkdtempSync(join(tmpdir(), 'carevault-jobs-'));
  dirs.push(dir);
  const started: string[] = [];
  const gates = new Map<string, () => void>();
  const waiting = new Map<string, Promise<void>>();
  const gate = (name: string) => {
    if (!waiting.has(name)) waiting.set(name, new Promise<void>((resolve) => gates.set(name, resolve)));
    return waiting.get(name) as Promise<void>;
  };
  const jobs = new AsyncJobs<AsyncJob>(
    dir,
    async (_job, body) => {
      started.push(body);
      await gate(body);
      return { status: 200, body: `done ${body}` };
    },
    { error: () => {} },
    workers,
  );
  const accept = (name: string) =>
    jobs.accept(
      { partition: 'p', base: 'https://localhost/fhir/p', access: {}, who: {} } as never,
      Readable.from([name]),
    );
  const open = (name: string) => {
    void gate(name);
    gates.get(name)?.();
  };
  const until = async (what: () => Promise<boolean> | boolean) => {
    for (let i = 0; i < 400 && !(await what()); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(await what(), 'timed out');
  };
  const state = async (id: string) => (await jobs.get(id))?.state;
  const openAll = () => {
    for (const resolve of gates.values()) resolve();
  };
  queues.push({ jobs, openAll });
  return { jobs, started, accept, open, until, state };
}

describe('asynchronous jobs', () => {
  test('a small job finishes while a large one still runs on the same node', async () => {
    const q = gatedQueue();
    const large = await q.accept('large');
    await q.until(() => q.started.includes('large'));
    const small = await q.accept('small');
    q.open('small');
    await q.until(async () => (await q.state(small.id)) === 'completed');
    assert.equal(await q.state(large.id), 'in-progress');
    q.open('large');
    await q.until(async () => (await q.state(large.id)) === 'completed');
    assert.equal((await q.jobs.get(large.id))?.result?.body, 'done large');
  });

  test('jobs waiting for a worker start oldest first', async () => {
    const q = gatedQueue(1);
    await q.accept('first');
    await q.until(() => q.started.includes('first'));
    const names = ['j1', 'j2', 'j3', 'j4', 'j5'];
    for (const name of names) {
      await q.accept(name);
      await new Promise((r) => setTimeout(r, 3)); // acceptance times a millisecond apart at least
    }
    for (const name of ['first', ...names]) q.open(name);
    await q.until(() => q.started.length === 6);
    assert.deepEqual(q.started, ['first', ...names]);
  });
});
