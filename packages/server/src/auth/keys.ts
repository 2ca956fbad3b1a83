import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { ownerOnly, privateDir } from '../config/data-dir.ts';
import { writeSecretFile } from '../config/files.ts';
import { ConfigError } from '../config/index.ts';

export type SigningAlg = 'ES256' | 'RS256';
export const SIGNING_ALGS: readonly SigningAlg[] = ['ES256', 'RS256'];

export interface StoredKey {
  kid: string;
  alg: SigningAlg;
  /** Private JWK. Lives only in this 0600 file, never in the database. */
  jwk: JWK;
  createdAt: number;
  /** Published from creation, used for signing only from here on: relying parties fetch it first. */
  activateAt: number;
  /** Set when a newer key took over; kept published until tokens signed with it have expired. */
  retiredAt?: number;
}

interface KeyFile {
  keys: StoredKey[];
  cookieKeys: string[];
}

const now = () => Math.floor(Date.now() / 1000);

async function newKey(alg: SigningAlg, activateAt: number): Promise<StoredKey> {
  const { privateKey } = await generateKeyPair(alg, {
    extractable: true,
    ...(alg === 'RS256' ? { modulusLength: 2048 } : {}),
  });
  const jwk = await exportJWK(privateKey);
  const kid = `${alg.toLowerCase()}-${randomUUID().slice(0, 8)}`;
  return { kid, alg, jwk: { ...jwk, kid, alg, use: 'sig' }, createdAt: now(), activateAt };
}

/**
 * Token-signing keys kept in <data-dir>/keys/signing-keys.json (0600). Rotation follows
 * "publish before use": a new key is in the JWKS at once but signs only from `activateAt`;
 * the key it replaces stays published for `retentionSeconds` so tokens it signed still verify.
 */
export class KeyRing {
  readonly path: string;
  private file: KeyFile;
  private mtimeMs = 0;

  private constructor(path: string, file: KeyFile) {
    this.path = path;
    this.file = file;
    this.mtimeMs = statSync(path).mtimeMs;
  }

  static async open(dataDir: string): Promise<KeyRing> {
    const dir = join(dataDir, 'keys');
    privateDir(dir);
    const path = join(dir, 'signing-keys.json');
    if (!existsSync(path)) {
      const t = now();
      const file: KeyFile = {
        keys: [await newKey('ES256', t), await newKey('RS256', t)],
        cookieKeys: [randomBytes(32).toString('base64url')],
      };
      try {
        // Never replace a key file another process wrote meanwhile: tokens it signed would stop verifying.
        writeSecretFile(path, JSON.stringify(file, null, 2), 0o600, true);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    ownerOnly(path);
    return new KeyRing(path, KeyRing.read(path));
  }

  private static read(path: string): KeyFile {
    let parsed: KeyFile;
    try {
      parsed = JSON.parse(readFileSync(path, 'utf8')) as KeyFile;
    } catch {
      throw new ConfigError(`${path} is not valid JSON: restore the key file from a backup`);
    }
    if (!Array.isArray(parsed?.keys) || !Array.isArray(parsed.cookieKeys)) {
      throw new ConfigError(`${path} is not a carevault key file: restore it from a backup`);
    }
    return parsed;
  }

  /** Re-reads the file when another process (the `keys rotate` command) changed it. */
  reloadIfChanged(): boolean {
    const mtime = statSync(this.path).mtimeMs;
    if (mtime === this.mtimeMs) return false;
    this.file = KeyRing.read(this.path);
    this.mtimeMs = mtime;
    return true;
  }

  get cookieKeys(): string[] {
    return [...this.file.cookieKeys];
  }

  list(): Omit<StoredKey, 'jwk'>[] {
    return this.file.keys.map(({ jwk: _jwk, ...meta }) => meta);
  }

  /**
   * The key that signs now for `alg`: the newest active, unretired one. A node whose clock lags the node that
   * made the keys finds none active yet (the first keys activate when they are made): it signs with the one
   * that became active first, as the other nodes did before it — published from the same file, so verifiable.
   */
  signingKid(alg: SigningAlg, at = now()): string {
    const unretired = this.file.keys.filter((k) => k.alg === alg && (k.retiredAt === undefined || k.retiredAt > at));
    const active = unretired.filter((k) => k.activateAt <= at).sort((a, b) => b.activateAt - a.activateAt);
    const key = active[0] ?? unretired.sort((a, b) => a.activateAt - b.activateAt)[0];
    if (!key) throw new Error(`no active ${alg} signing key`);
    return key.kid;
  }

  /** Private JWKS for oidc-provider, current signing keys first (it signs id_tokens with the first match). */
  privateJwks(at = now()): JWK[] {
    const current = new Set(SIGNING_ALGS.map((alg) => this.signingKid(alg, at)));
    const rank = (k: StoredKey) => (current.has(k.kid) ? 0 : 1);
    return [...this.file.keys].sort((a, b) => rank(a) - rank(b)).map((k) => k.jwk);
  }

  publicJwks(at = now()): JWK[] {
    return this.privateJwks(at).map(({ d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub }) => pub);
  }

  /** A string that changes whenever what is published or what signs changes. */
  fingerprint(at = now()): string {
    return `${this.privateJwks(at)
      .map((k) => k.kid)
      .join(',')}|${SIGNING_ALGS.map((a) => this.signingKid(a, at)).join(',')}`;
  }

  /**
   * Adds a new key for `alg`, active after `activateAfter` seconds, retires the current one at that moment
   * and drops keys retired more than `retentionSeconds` ago.
   */
  async rotate(alg: SigningAlg, activateAfter: number, retentionSeconds: number): Promise<StoredKey> {
    const t = now();
    const key = await newKey(alg, t + activateAfter);
    const keys = this.file.keys
      .filter((k) => k.retiredAt === undefined || k.retiredAt + retentionSeconds > t)
      // Every older key of this alg stops signing when the new one starts, including a still-pending one.
      .map((k) =>
        k.alg === alg && (k.retiredAt === undefined || k.retiredAt > key.activateAt)
          ? { ...k, retiredAt: key.activateAt }
          : k,
      );
    this.file = { ...this.file, keys: [...keys, key] };
    writeSecretFile(this.path, JSON.stringify(this.file, null, 2));
    this.mtimeMs = statSync(this.path).mtimeMs;
    return key;
  }
}
