import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, exportPKCS8, generateKeyPair, importPKCS8, type JWK } from 'jose';
import { privateDir } from '../config/data-dir.ts';
import { writeSecretFile } from '../config/files.ts';

/** What `carevault viewer init` decided, kept in <data-dir>/viewer/settings.json. */
export interface ViewerSettings {
  /** The client id the viewer uses at this platform (its directory and consent vaults). */
  clientId: string;
  kid: string;
  alg: 'ES256';
  orgOid?: string | undefined;
  orgName?: string | undefined;
  /** Vaults of this platform holding the address directory and the consent registry. */
  directory: string;
  consent: string;
  /** false in regions without consent registry (seq-2a): every directory source is asked. */
  consentCheck: boolean;
}

export class ViewerInputError extends Error {}

export const viewerDir = (dataDir: string) => join(dataDir, 'viewer');
const settingsPath = (dataDir: string) => join(viewerDir(dataDir), 'settings.json');
const keyPath = (dataDir: string) => join(viewerDir(dataDir), 'signing-key.pem');
export const jwksPath = (dataDir: string) => join(viewerDir(dataDir), 'jwks.json');

export function loadSettings(dataDir: string): ViewerSettings | undefined {
  const path = settingsPath(dataDir);
  if (!existsSync(path)) return undefined;
  return JSON.parse(readFileSync(path, 'utf8')) as ViewerSettings;
}

export function requireSettings(dataDir: string): ViewerSettings {
  const s = loadSettings(dataDir);
  if (!s) throw new ViewerInputError('the viewer is not set up here; run `carevault viewer init` first');
  return s;
}

export function saveSettings(dataDir: string, settings: ViewerSettings): void {
  writeSecretFile(settingsPath(dataDir), `${JSON.stringify(settings, null, 2)}\n`, 0o644);
}

/**
 * The viewer's signing key (ES256): it signs client assertions at every source and every X-ZV-Context. Created
 * once, owner-only, never replaced by a second init (sources registered its public half).
 */
export async function ensureSigningKey(dataDir: string): Promise<{ kid: string; publicJwk: JWK }> {
  privateDir(viewerDir(dataDir));
  const path = keyPath(dataDir);
  if (!existsSync(path)) {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    writeSecretFile(path, await exportPKCS8(privateKey), 0o600, true);
  }
  const key = await importPKCS8(readFileSync(path, 'utf8'), 'ES256', { extractable: true });
  const { d: _, ...publicJwk } = await exportJWK(key);
  const kid = await calculateJwkThumbprint(publicJwk);
  return { kid, publicJwk: { ...publicJwk, kid, alg: 'ES256', use: 'sig' } };
}

export async function signingKey(dataDir: string): Promise<CryptoKey> {
  const path = keyPath(dataDir);
  if (!existsSync(path)) throw new ViewerInputError(`the viewer's signing key ${path} is missing; run viewer init`);
  return (await importPKCS8(readFileSync(path, 'utf8'), 'ES256')) as CryptoKey;
}

export function publicJwks(dataDir: string): { keys: JWK[] } | undefined {
  const path = jwksPath(dataDir);
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as { keys: JWK[] }) : undefined;
}
