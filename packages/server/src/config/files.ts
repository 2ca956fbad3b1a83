import { chmodSync, linkSync, renameSync, rmSync, writeFileSync } from 'node:fs';

/**
 * Writes atomically with owner-only permissions: private keys and secrets never sit world-readable.
 * `exclusive` refuses to replace an existing file (a CA or signing key must never be overwritten).
 */
export function writeSecretFile(path: string, content: string, mode = 0o600, exclusive = false): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, content, { mode });
  chmodSync(tmp, mode);
  if (!exclusive) {
    renameSync(tmp, path);
    return;
  }
  try {
    linkSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
}
