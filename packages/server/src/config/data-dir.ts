import { chmodSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { ConfigError } from './index.ts';

/**
 * The data directory holds the database, the CA key and the signing keys. It is created 0700; an existing
 * one that others may write to is refused (they could swap keys or the database), one they may read is
 * tolerated with a warning (the files inside are 0600, but their names and sizes show).
 */
export function secureDataDir(dir: string, warn: (message: string) => void): void {
  try {
    if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
    const mode = statSync(dir).mode & 0o777;
    if (mode & 0o022) {
      throw new ConfigError(
        `data directory ${dir} is writable by ${mode & 0o002 ? 'everyone' : 'its group'} (mode ${octal(mode)}); ` +
          `run: chmod 700 ${dir}`,
      );
    }
    if (mode & 0o044) {
      warn(`data directory ${dir} is readable by others (mode ${octal(mode)}); consider: chmod 700 ${dir}`);
    }
  } catch (err) {
    throw asConfigError(err, dir);
  }
}

/** A directory only the owner may enter (keys/, pki/), whatever mode it had. */
export function privateDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
  } catch (err) {
    throw asConfigError(err, dir);
  }
}

/** Files that must be owner-only even when they already existed with a wider mode. */
export function ownerOnly(...files: string[]): void {
  for (const f of files) if (existsSync(f)) chmodSync(f, 0o600);
}

const octal = (mode: number) => `0${mode.toString(8)}`;

/** EACCES/EROFS/ENOTDIR become one line a person can act on. */
export function asConfigError(err: unknown, path: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM') return new ConfigError(`cannot write to ${path}: permission denied`);
  if (code === 'EROFS') return new ConfigError(`cannot write to ${path}: read-only file system`);
  if (code === 'ENOTDIR' || code === 'EEXIST') return new ConfigError(`${path} is not a directory`);
  return err;
}
