import { Worker } from 'node:worker_threads';
import { StoreBusyError, StoreTimeoutError, StoreUnavailableError } from '../errors.ts';
import type { ResourceStore } from '../types.ts';

export type SearchRequest = { id: number; args: Parameters<ResourceStore['search']> };
export type SearchResponse =
  | { ready: true }
  | { id: number; value: Awaited<ReturnType<ResourceStore['search']>> }
  | { id: number; error: { name: string; message: string; code?: string | undefined } };

interface Job {
  id: number;
  request: SearchRequest;
  resolve(value: Awaited<ReturnType<ResourceStore['search']>>): void;
  reject(err: unknown): void;
  timer: NodeJS.Timeout;
}

interface Slot {
  worker?: Worker | undefined;
  /** The thread has opened the database: a job's time runs from here, not from while the thread loads. */
  ready: boolean;
  job?: Job | undefined;
  /** Given up on for its time: a thread cannot be stopped inside SQLite, so it counts until its statement ends. */
  retiring: boolean;
}

export interface SearchThreads {
  search: ResourceStore['search'];
  close(): Promise<void>;
}

// The thread runs TypeScript like the rest of the server (bin/carevault.js registers tsx the same way).
const ENTRY = new URL('./search-thread.ts', import.meta.url).href;
const BOOT = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))})
  .then((tsx) => { tsx.register(); return import(${JSON.stringify(ENTRY)}); })`;

/**
 * Costly searches of the embedded store (search-cost.ts) run on `threads` threads, each with a read-only
 * connection: better-sqlite3 answers synchronously, so such a search on the server's own thread held up every
 * request of the node (tokens, reads, writes) for as long as it ran — ≈ 0.8 s for a four-key sort of 100,000
 * Observations, ten times that for a vault ten times larger. Only those: on a thread a search pays a message each
 * way and a page cache emptied by every commit of the writing connection, 2–3× its CPU on the server's thread.
 * A search may take `timeoutMs` to run, and as long again waiting for a thread. SQLite cannot be interrupted from
 * here (better-sqlite3 has no sqlite3_interrupt), so a search over its time is answered at once and its thread is
 * ended when the statement returns; until then it still counts against `threads`, which bounds what costly
 * searches can take of the machine.
 */
export function searchThreads(file: string, threads: number, timeoutMs: number): SearchThreads {
  const slots: Slot[] = Array.from({ length: threads }, () => ({ ready: false, retiring: false }));
  const queue: Job[] = [];
  let nextId = 1;
  let closed = false;

  function start(slot: Slot): Worker {
    const worker = new Worker(BOOT, { eval: true, workerData: { file } });
    worker.on('message', (m: SearchResponse) => {
      const job = slot.job;
      if ('ready' in m) {
        slot.ready = true;
        if (job) timeJob(slot, job);
        return;
      }
      if (!job || job.id !== m.id) return;
      finish(slot, job);
      if ('error' in m) job.reject(Object.assign(new Error(m.error.message), m.error));
      else job.resolve(m.value);
    });
    // The thread failed to start (the database is gone) or died: its job fails, the next job starts another.
    worker.on('error', (err) => {
      const job = slot.job;
      if (job) {
        finish(slot, job);
        job.reject(err);
      }
    });
    worker.on('exit', () => {
      if (slot.worker !== worker) return;
      slot.worker = undefined;
      slot.ready = false;
      slot.retiring = false;
      const job = slot.job;
      if (job) {
        finish(slot, job);
        job.reject(new Error('the search thread ended'));
      }
      dispatch();
    });
    return worker;
  }

  function finish(slot: Slot, job: Job): void {
    clearTimeout(job.timer);
    slot.job = undefined;
    // An idle thread does not keep the process alive.
    slot.worker?.unref();
    queueMicrotask(dispatch);
  }

  function dispatch(): void {
    while (queue.length && !closed) {
      const slot = slots.find((s) => !s.job && !s.retiring);
      if (!slot) return;
      const job = queue.shift() as Job;
      clearTimeout(job.timer);
      slot.worker ??= start(slot);
      slot.worker.ref();
      slot.job = job;
      if (slot.ready) timeJob(slot, job);
      slot.worker.postMessage(job.request);
    }
  }

  function timeJob(slot: Slot, job: Job): void {
    job.timer = setTimeout(() => overrun(slot, job), timeoutMs);
  }

  function overrun(slot: Slot, job: Job): void {
    if (slot.job !== job) return;
    slot.job = undefined;
    slot.retiring = true;
    slot.worker?.unref();
    void slot.worker?.terminate();
    job.reject(new StoreTimeoutError(`the search ran longer than ${timeoutMs / 1000} s`));
  }

  return {
    search(...args) {
      if (closed) return Promise.reject(new StoreUnavailableError('the store is closed'));
      return new Promise((resolve, reject) => {
        const id = nextId++;
        const job: Job = {
          id,
          request: { id, args },
          resolve,
          reject,
          // Waiting longer than a search may run: the threads are taken by costly searches; retry later.
          timer: setTimeout(() => {
            const at = queue.indexOf(job);
            if (at < 0) return;
            queue.splice(at, 1);
            reject(new StoreBusyError('every search thread is busy'));
          }, timeoutMs),
        };
        queue.push(job);
        dispatch();
      });
    },
    async close() {
      closed = true;
      for (const job of queue.splice(0)) {
        clearTimeout(job.timer);
        job.reject(new StoreUnavailableError('the store is closed'));
      }
      // A thread inside a statement ends when the statement returns; the process need not wait for it.
      await Promise.all(
        slots.map(async (slot) => {
          const w = slot.worker;
          const job = slot.job;
          slot.worker = undefined;
          if (job) {
            finish(slot, job);
            job.reject(new StoreUnavailableError('the store is closed'));
          }
          w?.unref();
          const ended = w?.terminate();
          if (!job && !slot.retiring) await ended;
        }),
      );
    },
  };
}
