import { chmodSync, renameSync, writeFileSync } from 'node:fs';

/** Writes atomically with owner-only permissions: private keys and secrets never sit world-readable. */
export function writeSecretFile(path: string, content: string, mode = 0o600): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, content, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}
