import { Worker } from 'node:worker_threads';
import type * as Fqm from 'fqm-execution';
import { FhirError } from '../fhir/errors.ts';

export type FqmBundle = Parameters<typeof Fqm.Calculator.calculate>[0];
export type FqmOptions = Fqm.CalculationOptions;
type Method = 'calculate' | 'calculateDataRequirements' | 'calculateGapsInCare';

/** What one calculation may take: the engine thread's heap, and its time. */
export interface EngineLimits {
  memoryMb: number;
  timeoutMs: number;
}

interface Job {
  id: number;
  method: Method;
  args: unknown[];
  resolve(value: unknown): void;
  reject(err: unknown): void;
  timer?: NodeJS.Timeout;
  /** The thread it was given to: only that thread's end fails it. */
  worker?: Worker;
}

const WORKER = new URL('./engine-worker.ts', import.meta.url).href;
// The thread runs TypeScript like the rest of the server: tsx registered before its module is imported.
const BOOT = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(WORKER)}); });`;

let limits: EngineLimits = { memoryMb: 1024, timeoutMs: 300_000 };
let worker: Worker | undefined;
let running: Job | undefined;
const queue: Job[] = [];
let nextId = 1;
/** New limits arrived while a calculation ran: its thread is replaced once it is done. */
let stale = false;

/** Sets the limits (config: CAREVAULT_MEASURE_MEMORY_MB, CAREVAULT_MEASURE_TIMEOUT); a new thread takes them. */
export function configureEngine(next: EngineLimits): void {
  if (next.memoryMb === limits.memoryMb && next.timeoutMs === limits.timeoutMs) return;
  limits = next;
  if (running) stale = true;
  else stop();
}

function stop(): void {
  const w = worker;
  worker = undefined;
  void w?.terminate();
}

/** The job's failure when the thread ends under it: out of memory, or killed for its time. */
function fail(job: Job, err: FhirError): void {
  clearTimeout(job.timer);
  if (running === job) running = undefined;
  job.reject(err);
}

function start(): Worker {
  const w = new Worker(BOOT, {
    eval: true,
    resourceLimits: { maxOldGenerationSizeMb: limits.memoryMb },
  });
  w.on('message', (m: { id?: number; json?: string; error?: { message: string; name: string } }) => {
    const job = running;
    if (m.id === undefined || !job || job.id !== m.id) return;
    clearTimeout(job.timer);
    running = undefined;
    if (m.error) {
      const e = new Error(m.error.message);
      e.name = m.error.name;
      job.reject(e);
    } else job.resolve(JSON.parse(m.json as string));
    if (stale) {
      stale = false;
      stop();
    }
    next();
  });
  // 'error' and then 'exit' both come when a thread dies; the job it ran fails once, a later job is not touched.
  const died = (why: FhirError) => {
    if (worker === w) worker = undefined;
    if (running?.worker === w) fail(running, why);
    next();
  };
  w.on('error', (err: Error & { code?: string }) =>
    died(
      err.code === 'ERR_WORKER_OUT_OF_MEMORY'
        ? new FhirError(422, 'too-costly', `the measure's logic needed more than ${limits.memoryMb} MB`)
        : new FhirError(500, 'exception', `the measure engine failed: ${err.message}`),
    ),
  );
  w.on('exit', () => died(new FhirError(503, 'transient', 'the measure engine stopped; retry')));
  return w;
}

function next(): void {
  if (running) return;
  const job = queue.shift();
  if (!job) {
    worker?.unref();
    return;
  }
  running = job;
  worker ??= start();
  job.worker = worker;
  worker.ref();
  job.timer = setTimeout(() => {
    fail(job, new FhirError(422, 'too-costly', `the measure's logic ran longer than ${limits.timeoutMs / 1000} s`));
    stop();
    next();
  }, limits.timeoutMs);
  worker.postMessage({ id: job.id, method: job.method, args: job.args });
}

/**
 * Runs an fqm-execution method on the engine thread, one at a time (fqm-execution, the engine behind seed 002's
 * DEQM test server, loads on the thread's first use). A calculation that outgrows the heap limit or the time
 * limit ends the thread — the next one starts a fresh thread — and is 422 `too-costly`; the server's event loop
 * is never held by a calculation. Its types speak `fhir4.*` from its own @types/fhir; ours are the same JSON.
 */
export function runEngine<T>(method: Method, ...args: unknown[]): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    queue.push({ id: nextId++, method, args, resolve: resolve as (v: unknown) => void, reject });
    next();
  });
}
