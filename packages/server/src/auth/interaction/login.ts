import type { FastifyRequest } from 'fastify';
import { type AuditWho, EVENT } from '../../audit/balp.ts';
import type { AuditTrail } from '../../audit/trail.ts';
import { correlationOf } from '../../http/correlation.ts';
import type { LoginThrottle } from '../../people/login-throttle.ts';
import { verifyPassword } from '../../people/passwords.ts';
import type { Store } from '../../store/types.ts';

export interface LoginDeps {
  store: Store;
  audit: AuditTrail;
  /** Shared by every node when it is Redis-backed. */
  throttle: LoginThrottle;
}

/** The person at a page, as an AuditEvent's agent: who, through which client, from where, in which request. */
export function personAt(req: FastifyRequest, clientId: string, username: string): AuditWho {
  const ids = correlationOf(req.raw);
  return {
    clientId,
    user: { id: username },
    address: req.ip,
    requestId: ids?.requestId,
    correlationId: ids?.correlationId,
  };
}

export type LoginOutcome = { ok: true } | { ok: false; status: number; error: string; retryAfterSeconds?: number };

/**
 * One attempt to sign in with a user name and password, on any of our pages: throttled per user and address
 * (refused when the shared counters cannot be reached), audited as a login (`clientId`: the app asking, or the
 * page itself), and logged without the password.
 */
export async function checkLogin(
  o: LoginDeps,
  req: FastifyRequest,
  username: string,
  password: string,
  clientId: string,
): Promise<LoginOutcome> {
  const loginAudit = (outcome: '0' | '4', outcomeDesc: string) =>
    o.audit.record({
      type: EVENT.userAuthentication,
      subtype: EVENT.login,
      action: 'E',
      outcome,
      outcomeDesc,
      who: personAt(req, clientId, username || '(empty)'),
      clientRole: '110150',
    });
  let wait: number;
  try {
    wait = await o.throttle.retryAfterMs(username, req.ip);
  } catch (err) {
    // Without the shared failure counters a login is not attempted: guessing must never go uncounted.
    req.log.error({ err: { message: (err as Error).message } }, 'login throttle unavailable; login refused');
    return {
      ok: false,
      status: 503,
      error: 'Signing in is temporarily unavailable. Try again in a moment.',
      retryAfterSeconds: 5,
    };
  }
  if (wait > 0) {
    req.log.warn({ event: 'login-throttled', username }, 'login refused: too many failed attempts');
    await loginAudit('4', 'throttled: too many failed attempts');
    const seconds = Math.ceil(wait / 1000);
    return {
      ok: false,
      status: 429,
      error: `Too many failed attempts. Try again in ${seconds} ${seconds === 1 ? 'second' : 'seconds'}.`,
      retryAfterSeconds: seconds,
    };
  }
  const user = username ? await o.store.users.get(username) : undefined;
  const ok = (await verifyPassword(user?.passwordHash, password)) && user !== undefined && !user.disabled;
  if (!ok) {
    await o.throttle
      .failed(username, req.ip)
      .catch((err: Error) => req.log.error({ err: { message: err.message } }, 'could not count a failed login'));
    req.log.warn({ event: 'login-failed', username }, 'login failed');
    await loginAudit('4', 'wrong user name or password');
    return { ok: false, status: 401, error: 'The user name or password is not correct.' };
  }
  await o.throttle.succeeded(username, req.ip).catch(() => {});
  req.log.info({ event: 'login', username }, 'login succeeded');
  await loginAudit('0', 'login');
  return { ok: true };
}

/** The user name and password of a posted login form, bounded. */
export function credentialsOf(form: URLSearchParams): { username: string; password: string } {
  return {
    username: (form.get('username') ?? '').trim().slice(0, 128),
    password: (form.get('password') ?? '').slice(0, 1024),
  };
}
