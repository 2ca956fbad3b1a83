import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';

/**
 * An exclusive lock between the nodes that share a directory: a file naming its holder, which the holder keeps
 * fresh (touching it more often than `staleMs`). A lock left stale by a dead node is taken over by renaming it
 * (atomic, so exactly one node wins). Returns whether `node` holds the lock now.
 */
export async function claimLock(lock: string, node: string, staleMs: number): Promise<boolean> {
  const st = await stat(lock).catch(() => undefined);
  if (st && Date.now() - st.mtimeMs < staleMs && !(await holderDied(lock))) return false;
  if (st) {
    // Only one node's rename of the stale lock succeeds.
    const taken = `${lock}.stale.${node}`;
    if (
      !(await rename(lock, taken).then(
        () => true,
        () => false,
      ))
    )
      return false;
    await rm(taken, { force: true });
  }
  return writeFile(lock, `${hostname()} ${process.pid} ${node}`, { flag: 'wx', mode: 0o600 }).then(
    () => true,
    () => false,
  );
}

/** Whether `node` is the one that wrote the lock (it may have been taken over while this node stood still). */
export async function holdsLock(lock: string, node: string): Promise<boolean> {
  return (await readFile(lock, 'utf8').catch(() => '')).split(' ')[2] === node;
}

/** A lock of a process on this host that no longer runs (killed, crashed) need not wait to go stale. */
async function holderDied(lock: string): Promise<boolean> {
  const [host, pid] = (await readFile(lock, 'utf8').catch(() => '')).split(' ');
  if (host !== hostname() || !pid || Number(pid) === process.pid) return false;
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
