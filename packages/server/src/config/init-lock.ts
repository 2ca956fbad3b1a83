import { mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

const STALE_MS = 60_000;

/**
 * Runs `fn` while holding the data directory's initialization lock (an atomic mkdir), so that several
 * processes starting at once on a fresh data directory — N nodes, or a node and an admin command — create
 * the CA, the server certificate and the signing keys once instead of racing on them. A lock left by a
 * process that died is taken over after a minute.
 */
export async function withInitLock<T>(dataDir: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(dataDir, '.init.lock');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  for (;;) {
    try {
      mkdirSync(lock, { mode: 0o700 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      try {
        if (Date.now() - statSync(lock).mtimeMs > STALE_MS) rmSync(lock, { recursive: true, force: true });
      } catch {
        // Released meanwhile: try again.
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}
