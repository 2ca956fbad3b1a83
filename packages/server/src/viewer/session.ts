import type { Professional } from '@carevault/sdk';
import { cookieValue, type StoredSession, StoredSessions } from '../http/stored-sessions.ts';
import type { Store } from '../store/types.ts';

/** A professional's viewer session after a launch: who looks, at whom, and how they came in. */
export interface ViewerSession extends StoredSession {
  professional: Professional;
  patient: { bsn: string; name?: string | undefined; birthDate?: string | undefined };
  /** The IdP's name, or `smart:<ehr>` for an EHR launch. */
  via: string;
}

export const SESSION_COOKIE = 'cv_viewer';

/** The Zorgviewer's sessions: cookie `cv_viewer`, sent to `/viewer` only. */
export class ViewerSessions extends StoredSessions<ViewerSession> {
  constructor(store: Store, maxAgeSeconds: number, idleSeconds: number) {
    super(store, { model: 'ViewerSession', cookie: SESSION_COOKIE, path: '/viewer' }, maxAgeSeconds, idleSeconds);
  }
}

export const sessionIdOf = (cookieHeader: string | undefined) => cookieValue(cookieHeader, SESSION_COOKIE);
