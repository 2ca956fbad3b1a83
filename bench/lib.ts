/** Shared pieces of the bench scripts: a server child process, a closed-loop load generator, CPU accounting. */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { type Agent, request } from 'undici';

export const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
export const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 1);

/** utime + stime of a process, in seconds (Linux /proc, clock ticks of 1/100 s). */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The processes a process started (the measure engine runs in one of its own). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** CPU-seconds of a process and the processes it started. */
export function treeCpuSeconds(pid: number): number {
  return cpuSeconds(pid) + childPids(pid).reduce((sum, child) => sum + treeCpuSeconds(child), 0);
}

/** A process's resident memory now (`VmRSS`) or at its peak (`VmHWM`), in MiB (Linux /proc). */
export function residentMiB(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  const kb = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb ?? 0) / 1024;
}

/** Busy CPU-seconds of the whole machine (all cores; /proc/stat, everything but idle and iowait). */
function machineBusySeconds(): number {
  const [, ...ticks] = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).map(Number);
  const total = ticks.reduce((a, b) => a + b, 0);
  return (total - (ticks[3] ?? 0) - (ticks[4] ?? 0)) / 100;
}

export async function startServer(
  dataDir: string,
  port: number,
  env: Record<string, string> = {},
): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    // BENCH_NODE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the server.
    [
      ...(process.env.BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? []),
      'packages/server/bin/carevault.js',
      'serve',
      '--port',
      String(port),
      '--data-dir',
      dataDir,
    ],
    {
      // The load comes from one address and one client: the benchmark measures the server, not its rate limit.
      env: { ...process.env, CAREVAULT_LOG_LEVEL: 'warn', CAREVAULT_RATE_LIMIT: '100000000/s', ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  await new Promise<void>((resolve, reject) => {
    // Keep draining the server's log pipe: a full pipe would block its (synchronous) logger.
    child.stdout?.on('data', (d) => {
      const text = String(d);
      if (text.includes('carevault is running')) resolve();
      else if (/"level":(50|60)/.test(text)) process.stderr.write(`server: ${text.slice(0, 500)}\n`);
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  // A bench that fails half-way must not leave its server running (and holding a core) after it.
  const orphaned = () => child.kill('SIGKILL');
  process.once('exit', orphaned);
  child.once('exit', () => process.off('exit', orphaned));
  return child;
}

/** A client_credentials token for a client_secret_basic client. */
export async function secretToken(base: string, agent: Agent, clientId: string, secret: string): Promise<string> {
  const res = await request(`${base}/oauth/token`, {
    method: 'POST',
    dispatcher: agent,
    headers: {
      authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: 'grant_type=client_credentials',
  });
  const { access_token } = (await res.body.json()) as { access_token: string };
  return access_token;
}

export async function stopServer(child: ChildProcess): Promise<void> {
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
}

export interface LoadResult {
  name: string;
  wall: number;
  perCpu: number;
  errors: number;
}

/** `CONCURRENCY` callers in a loop for `SECONDS`; counts 2xx answers, and the server's CPU time. */
export async function load(
  name: string,
  pid: number,
  agent: Agent,
  /** `weight`: how many units one successful request counts for (e.g. resources in a Bundle). */
  make: () => { url: string; method?: string; headers?: Record<string, string>; body?: string; weight?: number },
  concurrency = CONCURRENCY,
): Promise<LoadResult> {
  if (process.env.BENCH_VERBOSE) console.error(`phase: ${name}`);
  // Warm up first, uncounted: the first requests of a phase load what the server loads lazily (the R4 definitions
  // for validation: ≈ 0.5 s of CPU) and get the JIT going; the figures are for a server that is running.
  await run(WARMUP_SECONDS);
  const cpu0 = cpuSeconds(pid);
  const self0 = cpuSeconds(process.pid);
  const machine0 = machineBusySeconds();
  const start = performance.now();
  const { ok, errors } = await run(SECONDS);
  const elapsed = (performance.now() - start) / 1000;
  const cpu = cpuSeconds(pid) - cpu0;
  if (process.env.BENCH_VERBOSE) {
    // Where the machine's cores went: the server, this load generator, everything else (e.g. PostgreSQL).
    const self = cpuSeconds(process.pid) - self0;
    const rest = machineBusySeconds() - machine0 - cpu - self;
    const share = (s: number) => `${((100 * s) / elapsed).toFixed(0)} %`;
    console.error(`  cores busy: server ${share(cpu)}, load generator ${share(self)}, rest ${share(rest)}`);
  }
  return { name, wall: ok / elapsed, perCpu: ok / Math.max(cpu, 0.01), errors };

  async function run(seconds: number): Promise<{ ok: number; errors: number }> {
    let ok = 0;
    let errors = 0;
    const end = performance.now() + seconds * 1000;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          const r = make();
          const res = await request(r.url, {
            method: (r.method ?? 'GET') as 'GET',
            dispatcher: agent,
            headers: r.headers,
            body: r.body,
          });
          const body = await res.body.text();
          if (res.statusCode < 300) ok += r.weight ?? 1;
          else if (errors++ < 3 && process.env.BENCH_VERBOSE) {
            console.error(`  ${r.method ?? 'GET'} ${r.url} → ${res.statusCode}: ${body.slice(0, 400)}`);
          }
        }
      }),
    );
    return { ok, errors };
  }
}
