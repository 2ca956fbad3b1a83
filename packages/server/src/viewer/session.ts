import { randomBytes } from 'node:crypto';
import type { Professional } from '@carevault/sdk';
import type { Store } from '../store/types.ts';

/** A professional's viewer session after a launch: who looks, at whom, and how they came in. */
export interface ViewerSession {
  id: string;
  professional: Professional;
  patient: { bsn: string; name?: string | undefined; birthDate?: string | undefined };
  /** The IdP's name, or `smart:<ehr>` for an EHR launch. */
  via: string;
  createdAt: number;
  lastSeen: number;
}

export const SESSION_COOKIE = 'cv_viewer';
const MODEL = 'ViewerSession';
/** lastSeen is written at most this often (every page view still refreshes it within a minute). */
const TOUCH_MS = 60_000;

/**
 * Sessions live in the store (shared by every node), addressed by a 256-bit random id that only the browser's
 * HttpOnly cookie holds; no token ever reaches the browser. A session ends at `maxAgeSeconds` after the launch,
 * after `idleSeconds` without a request, or at sign-out.
 */
export class ViewerSessions {
  constructor(
    private readonly store: Store,
    readonly maxAgeSeconds: number,
    readonly idleSeconds: number,
  ) {}

  async create(data: Omit<ViewerSession, 'id' | 'createdAt' | 'lastSeen'>): Promise<ViewerSession> {
    const now = Date.now();
    const session: ViewerSession = {
      ...data,
      id: randomBytes(32).toString('base64url'),
      createdAt: now,
      lastSeen: now,
    };
    await this.save(session);
    return session;
  }

  async get(id: string | undefined): Promise<ViewerSession | undefined> {
    if (!id || !/^[\w-]{43}$/.test(id)) return undefined;
    const row = await this.store.oidc.find(MODEL, id);
    if (!row) return undefined;
    const session = row.payload as unknown as ViewerSession;
    const now = Date.now();
    if (now - session.createdAt > this.maxAgeSeconds * 1000 || now - session.lastSeen > this.idleSeconds * 1000) {
      await this.store.oidc.destroy(MODEL, id);
      return undefined;
    }
    if (now - session.lastSeen > TOUCH_MS) {
      session.lastSeen = now;
      await this.save(session);
    }
    return session;
  }

  async end(id: string): Promise<void> {
    await this.store.oidc.destroy(MODEL, id);
  }

  cookie(session: ViewerSession | undefined): string {
    const value = session ? session.id : '';
    const maxAge = session ? this.maxAgeSeconds : 0;
    return `${SESSION_COOKIE}=${value}; Path=/viewer; HttpOnly; Secure; SameSite=Strict; Max-Age=${maxAge}`;
  }

  private save(s: ViewerSession): Promise<void> {
    const expiresAt = Math.ceil(s.createdAt / 1000) + this.maxAgeSeconds;
    return this.store.oidc.upsert(MODEL, s.id, s as unknown as Record<string, unknown>, expiresAt, {});
  }
}

export function sessionIdOf(cookieHeader: string | undefined): string | undefined {
  for (const part of (cookieHeader ?? '').split(';')) {
    const [k, v] = part.trim().split('=');
    if (k === SESSION_COOKIE) return v;
  }
  return undefined;
}
