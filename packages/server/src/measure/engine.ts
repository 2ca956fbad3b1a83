import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type * as Fqm from 'fqm-execution';
import { FhirError } from '../fhir/errors.ts';

export type FqmBundle = Parameters<typeof Fqm.Calculator.calculate>[0];
export type FqmOptions = Fqm.CalculationOptions;
type Method = 'calculate' | 'calculateDataRequirements' | 'calculateGapsInCare';

/** What one calculation may take: the engine process's heap, and its time; and how long an idle one is kept. */
export interface EngineLimits {
  memoryMb: number;
  timeoutMs: number;
  idleMs: number;
}

interface Job {
  id: number;
  method: Method;
  args: unknown[];
  resolve(value: unknown): void;
  reject(err: unknown): void;
  timer?: NodeJS.Timeout;
  /** The process it was given to: only that process's end fails it. */
  worker?: ChildProcess;
}

const WORKER = fileURLToPath(new URL('./engine-worker.ts', import.meta.url));
// The process runs TypeScript like the rest of the server.
const TSX = import.meta.resolve('tsx');

let limits: EngineLimits = { memoryMb: 1024, timeoutMs: 300_000, idleMs: 300_000 };
let worker: ChildProcess | undefined;
/** Ends a process that has had nothing to calculate for `idleMs`: it holds what its last calculation loaded. */
let idle: NodeJS.Timeout | undefined;
let running: Job | undefined;
const queue: Job[] = [];
let nextId = 1;
/** New limits arrived while a calculation ran: its process is replaced once it is done. */
let stale = false;

/** Sets the limits (config: CAREVAULT_MEASURE_MEMORY_MB, _TIMEOUT, _IDLE); a new process takes them. */
export function configureEngine(next: EngineLimits): void {
  if (next.memoryMb === limits.memoryMb && next.timeoutMs === limits.timeoutMs && next.idleMs === limits.idleMs) return;
  limits = next;
  if (running) stale = true;
  else stop();
}

function stop(): void {
  const w = worker;
  worker = undefined;
  w?.kill('SIGKILL');
}

/** The job's failure when the process ends under it: out of memory, or killed for its time. */
function fail(job: Job, err: FhirError): void {
  clearTimeout(job.timer);
  if (running === job) running = undefined;
  job.reject(err);
}

/**
 * A process, not a worker thread: a worker's heap limit is best-effort, and a worker that grows one array past
 * it aborts the whole server (nodejs/node#47224; seen on Node 24 with this file's test).
 */
function start(): ChildProcess {
  const w = fork(WORKER, [], {
    execArgv: ['--import', TSX, `--max-old-space-size=${limits.memoryMb}`],
    serialization: 'advanced',
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  });
  // Its last words tell an exhausted heap from any other end.
  let stderr = '';
  w.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-8192);
  });
  // Only a running job keeps the server's process alive (next()), not this pipe.
  (w.stderr as (NodeJS.ReadableStream & { unref?: () => void }) | null)?.unref?.();
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
  // The job the process ran fails once, whatever ends it; a later job on a new process is not touched.
  const died = (why: () => FhirError) => {
    if (worker === w) worker = undefined;
    if (running?.worker === w) fail(running, why());
    next();
  };
  w.on('error', (err) => died(() => new FhirError(500, 'exception', `the measure engine failed: ${err.message}`)));
  w.on('exit', () =>
    died(() =>
      /heap out of memory|Reached heap limit/.test(stderr)
        ? new FhirError(422, 'too-costly', `the measure's logic needed more than ${limits.memoryMb} MB`)
        : new FhirError(503, 'transient', 'the measure engine stopped; retry'),
    ),
  );
  return w;
}

function next(): void {
  if (running) return;
  const job = queue.shift();
  clearTimeout(idle);
  if (!job) {
    // Idle, the engine process does not keep the server's process alive, and is ended after a while.
    worker?.unref();
    worker?.channel?.unref();
    if (worker) idle = setTimeout(stop, limits.idleMs).unref();
    return;
  }
  running = job;
  worker ??= start();
  job.worker = worker;
  worker.ref();
  worker.channel?.ref();
  job.timer = setTimeout(() => {
    fail(job, new FhirError(422, 'too-costly', `the measure's logic ran longer than ${limits.timeoutMs / 1000} s`));
    stop();
    next();
  }, limits.timeoutMs);
  worker.send({ id: job.id, method: job.method, args: job.args });
}

/**
 * Runs an fqm-execution method in the engine process, one at a time (fqm-execution, the engine behind seed 002's
 * DEQM test server, loads on the process's first use). A calculation that outgrows the heap limit or the time
 * limit ends the process — the next one starts a fresh one — and is 422 `too-costly`; the server's event loop is
 * never held by a calculation. Its types speak `fhir4.*` from its own @types/fhir; ours are the same JSON.
 */
export function runEngine<T>(method: Method, ...args: unknown[]): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    queue.push({ id: nextId++, method, args, resolve: resolve as (v: unknown) => void, reject });
    next();
  });
}
