import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { storeEnv } from './store.ts';

export const BIN = fileURLToPath(new URL('../../bin/carevault.js', import.meta.url));

/** The environment for a carevault command on the `--data-dir` in `args`: its test store, unless one is given. */
export function withStore(args: string[], env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const i = args.indexOf('--data-dir');
  const dataDir = i >= 0 ? args[i + 1] : env.CAREVAULT_DATA_DIR;
  if (!dataDir || env.CAREVAULT_DATABASE_URL !== undefined) return env;
  return { ...env, ...storeEnv(dataDir) };
}

export interface ServeChild {
  child: ChildProcess;
  output(): { stdout: string; stderr: string };
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * `carevault serve` as its own process, the way an operator or a second node runs it. Resolves once it says
 * it is running, or once it exits (a refused start); `shell` prefixes the command (e.g. `umask 000;`).
 */
export async function serveChild(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; shell?: string; timeoutMs?: number } = {},
): Promise<ServeChild> {
  const argv = [process.execPath, BIN, 'serve', ...args];
  const env = withStore(args, options.env ?? process.env);
  const child = options.shell
    ? spawn('sh', ['-c', `${options.shell} exec "$@"`, 'sh', ...argv], { env })
    : spawn(argv[0] as string, argv.slice(1), { env });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => {
    stdout += d;
  });
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  let done = false;
  // 'close' rather than 'exit': by then stdout and stderr are drained, so a refused start's message is complete.
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      done = true;
      resolve(code);
    }),
  );
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  while (!done && !stdout.includes('carevault is running') && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    output: () => ({ stdout, stderr }),
    exited,
    async stop(signal = 'SIGTERM') {
      if (!done) child.kill(signal);
      await exited;
    },
  };
}
