import { randomBytes } from 'node:crypto';
import type { Store } from '../store/types.ts';

/** What every browser session held in the store has. */
export interface StoredSession {
  id: string;
  createdAt: number;
  lastSeen: number;
}

/** Where a kind of session lives: its payload model in the store, its cookie and the path the cookie is sent to. */
export interface SessionKind {
  model: string;
  cookie: string;
  path: string;
}

/** lastSeen is written at most this often (every page view still refreshes it within a minute). */
const TOUCH_MS = 60_000;

/**
 * Sessions live in the store (shared by every node), addressed by a 256-bit random id that only the browser's
 * HttpOnly cookie holds; no token ever reaches the browser. A session ends at `maxAgeSeconds` after it began,
 * after `idleSeconds` without a request, or at sign-out.
 */
export class StoredSessions<T extends StoredSession> {
  constructor(
    private readonly store: Store,
    private readonly kind: SessionKind,
    readonly maxAgeSeconds: number,
    readonly idleSeconds: number,
  ) {}

  async create(data: Omit<T, 'id' | 'createdAt' | 'lastSeen'>): Promise<T> {
    const now = Date.now();
    const session = { ...data, id: randomBytes(32).toString('base64url'), createdAt: now, lastSeen: now } as T;
    await this.save(session);
    return session;
  }

  async get(id: string | undefined): Promise<T | undefined> {
    if (!id || !/^[\w-]{43}$/.test(id)) return undefined;
    const row = await this.store.oidc.find(this.kind.model, id);
    if (!row) return undefined;
    const session = row.payload as unknown as T;
    const now = Date.now();
    if (now - session.createdAt > this.maxAgeSeconds * 1000 || now - session.lastSeen > this.idleSeconds * 1000) {
      await this.store.oidc.destroy(this.kind.model, id);
      return undefined;
    }
    if (now - session.lastSeen > TOUCH_MS) {
      session.lastSeen = now;
      await this.save(session);
    }
    return session;
  }

  /** The session a request's cookie names, if it is still live. */
  of(cookieHeader: string | undefined): Promise<T | undefined> {
    return this.get(cookieValue(cookieHeader, this.kind.cookie));
  }

  async end(id: string): Promise<void> {
    await this.store.oidc.destroy(this.kind.model, id);
  }

  cookie(session: T | undefined): string {
    const value = session ? session.id : '';
    const maxAge = session ? this.maxAgeSeconds : 0;
    return `${this.kind.cookie}=${value}; Path=${this.kind.path}; HttpOnly; Secure; SameSite=Strict; Max-Age=${maxAge}`;
  }

  private save(s: T): Promise<void> {
    const expiresAt = Math.ceil(s.createdAt / 1000) + this.maxAgeSeconds;
    return this.store.oidc.upsert(this.kind.model, s.id, s as unknown as Record<string, unknown>, expiresAt, {});
  }
}

export function cookieValue(cookieHeader: string | undefined, name: string): string | undefined {
  for (const part of (cookieHeader ?? '').split(';')) {
    const [k, v] = part.trim().split('=');
    if (k === name) return v;
  }
  return undefined;
}
