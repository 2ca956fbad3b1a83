import { createHash, randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { EVENT } from '../../audit/balp.ts';
import { ID_RE } from '../../fhir/resource-types.ts';
import { cookieValue, type StoredSession, StoredSessions } from '../../http/stored-sessions.ts';
import { withdrawConsents } from '../../people/consent-withdrawal.ts';
import { checkNewPassword, setPassword } from '../../people/users.ts';
import { PARTITION_RE, VaultInputError } from '../../vault/partitions.ts';
import type { ClientRegistry } from '../clients.ts';
import { errorHtml } from '../error-page.ts';
import type { KeyRing } from '../keys.ts';
import { grantContext } from '../launch-context.ts';
import { describeScope } from '../person-scopes.ts';
import { splitScope } from '../smart-scopes.ts';
import { type AccountView, accountLoginPage, accountPage, type ConsentItem } from './account-views.ts';
import { csrfMatches, csrfToken } from './csrf.ts';
import { acceptForms, formOf, sendPage } from './forms.ts';
import { checkLogin, credentialsOf, type LoginDeps, personAt } from './login.ts';

export interface AccountOptions extends LoginDeps {
  clients: ClientRegistry;
  keys: KeyRing;
}

interface AccountSession extends StoredSession {
  username: string;
  /** Which password the session was opened with (a digest of its hash): another password ends it. */
  credential: string;
}

const credentialOf = (passwordHash: string) => createHash('sha256').update(passwordHash).digest('base64url');

/** The login audit's client: the page itself, not an app. */
export const ACCOUNT_CLIENT = 'carevault-account';
const FORM_COOKIE = 'cv_account_form';
const SESSION = { model: 'AccountSession', cookie: 'cv_account', path: '/account' };
const MAX_AGE_SECONDS = 1800;
const IDLE_SECONDS = 600;

/**
 * The account page (`/account`): a person signs in with the password of the login pages and sees the apps they
 * consented to — what each may do, for which record, since and until when — and withdraws any of them, which
 * revokes its tokens at once, as `carevault user revoke` does (Keycloak's account console, "Applications").
 * Sessions live in the store (every node serves them); every form carries a CSRF token bound to the session,
 * the login form one bound to a random value in its own cookie.
 */
export async function accountRoutes(app: FastifyInstance, o: AccountOptions): Promise<void> {
  acceptForms(app);
  const sessions = new StoredSessions<AccountSession>(o.store, SESSION, MAX_AGE_SECONDS, IDLE_SECONDS);
  const key = () => o.keys.cookieKeys[0] as string;
  const sessionCsrf = (s: AccountSession) => csrfToken(key(), `account:${s.id}`);
  const fail = (reply: FastifyReply, status: number, error: string, description: string) =>
    sendPage(reply, status, (n) => errorHtml(error, description, n));

  /**
   * The request's session, while its user still exists, is not disabled and has the password the session was
   * opened with: a password changed elsewhere (another device, an administrator) signs every other session out.
   */
  const live = async (req: FastifyRequest): Promise<AccountSession | undefined> => {
    const s = await sessions.of(req.headers.cookie);
    if (!s) return undefined;
    const user = await o.store.users.get(s.username);
    if (user && !user.disabled && s.credential === credentialOf(user.passwordHash)) return s;
    await sessions.end(s.id);
    return undefined;
  };

  /**
   * A form posted from the page: its live session and fields when its CSRF token is that session's; otherwise
   * undefined, the answer sent (back to the page without a session, 403 with a wrong token).
   */
  const signedForm = async (
    req: FastifyRequest,
    reply: FastifyReply,
  ): Promise<{ s: AccountSession; form: URLSearchParams } | undefined> => {
    const s = await live(req);
    if (!s) {
      void reply.redirect('/account', 303);
      return undefined;
    }
    const form = formOf(req);
    if (!csrfMatches(key(), `account:${s.id}`, form.get('csrf'))) {
      void fail(reply, 403, 'invalid_request', 'The form could not be verified (CSRF token missing or wrong).');
      return undefined;
    }
    return { s, form };
  };

  const loginForm = (reply: FastifyReply, status: number, username?: string, error?: string) => {
    const form = randomBytes(16).toString('base64url');
    void reply.header(
      'set-cookie',
      `${FORM_COOKIE}=${form}; Path=/account; HttpOnly; Secure; SameSite=Strict; Max-Age=900`,
    );
    const csrf = csrfToken(key(), `account-login:${form}`);
    return sendPage(reply, status, (n) => accountLoginPage({ csrf, username, error }, n));
  };

  const consentsOf = async (username: string): Promise<ConsentItem[]> => {
    const items: ConsentItem[] = [];
    for (const g of await o.store.oidc.grantsOfAccount(username)) {
      const payload = (await o.store.oidc.find('Grant', g.grantId))?.payload as
        | { openid?: { scope?: string }; resources?: Record<string, string>; iat?: number }
        | undefined;
      const scopes = [
        ...splitScope(payload?.openid?.scope),
        ...Object.values(payload?.resources ?? {}).flatMap((s) => splitScope(s)),
      ];
      const context = await grantContext(o.store, g.grantId);
      const meta = await o.clients.engineMetadata(g.clientId);
      items.push({
        grantId: g.grantId,
        appName: typeof meta?.client_name === 'string' ? meta.client_name : g.clientId,
        scopes: scopes.map((scope) => ({ scope, text: describeScope(scope) })),
        patient: context?.patient
          ? `Patient/${context.patient}${context.partition ? ` (${context.partition})` : ''}`
          : undefined,
        given: payload?.iat ? new Date(payload.iat * 1000).toISOString() : undefined,
        until: g.expiresAt ? new Date(g.expiresAt * 1000).toISOString() : undefined,
      });
    }
    // Newest first: the consent a person just gave is the one they look for.
    return items.sort((a, b) => (b.given ?? '').localeCompare(a.given ?? ''));
  };

  // A Map: `?done=constructor` must not find Object's own properties.
  const NOTICES = new Map([
    ['withdrawn', 'Access withdrawn. The app has to ask you again.'],
    ['password', 'Password changed. Use the new one from now on.'],
    ['delegation', 'You no longer act for that person; the apps you allowed for their record lost their access.'],
  ]);
  const show = async (reply: FastifyReply, s: AccountSession, status: number, extra: Partial<AccountView>) => {
    const view: AccountView = {
      username: s.username,
      csrf: sessionCsrf(s),
      consents: await consentsOf(s.username),
      delegations: (await o.store.users.delegationsOf(s.username)).map((d) => ({
        vault: d.partition,
        patientId: d.patient,
        patient: `Patient/${d.patient} (${d.partition})`,
        scopes: splitScope(d.scope).map((scope) => ({ scope, text: describeScope(scope) })),
        since: new Date(d.createdAt).toISOString(),
      })),
      ...extra,
    };
    return sendPage(reply, status, (n) => accountPage(view, n));
  };

  app.get<{ Querystring: { done?: string } }>('/account', async (req, reply) => {
    const s = await live(req);
    if (!s) return loginForm(reply, 200);
    return show(reply, s, 200, { notice: NOTICES.get(String(req.query.done)) });
  });

  app.post('/account/login', async (req, reply) => {
    const form = formOf(req);
    const formId = cookieValue(req.headers.cookie, FORM_COOKIE);
    if (!formId || !csrfMatches(key(), `account-login:${formId}`, form.get('csrf'))) {
      return fail(reply, 403, 'invalid_request', 'The form could not be verified (CSRF token missing or wrong).');
    }
    const { username, password } = credentialsOf(form);
    const outcome = await checkLogin(o, req, username, password, ACCOUNT_CLIENT);
    if (!outcome.ok) {
      if (outcome.retryAfterSeconds) void reply.header('retry-after', String(outcome.retryAfterSeconds));
      return loginForm(reply, outcome.status, username, outcome.error);
    }
    const user = await o.store.users.get(username);
    if (!user) return loginForm(reply, 401, username, 'The user name or password is not correct.');
    const s = await sessions.create({ username: user.username, credential: credentialOf(user.passwordHash) });
    return reply
      .header('set-cookie', [
        sessions.cookie(s),
        `${FORM_COOKIE}=; Path=/account; HttpOnly; Secure; SameSite=Strict; Max-Age=0`,
      ])
      .header('cache-control', 'no-store')
      .redirect('/account', 303);
  });

  app.post('/account/logout', async (req, reply) => {
    const s = await live(req);
    if (s) {
      if (!csrfMatches(key(), `account:${s.id}`, formOf(req).get('csrf'))) {
        return fail(reply, 403, 'invalid_request', 'The form could not be verified (CSRF token missing or wrong).');
      }
      await sessions.end(s.id);
    }
    return reply.header('set-cookie', sessions.cookie(undefined)).redirect('/account', 303);
  });

  app.post('/account/password', async (req, reply) => {
    const signed = await signedForm(req, reply);
    if (!signed) return reply;
    const { s, form } = signed;
    const next = (form.get('new') ?? '').slice(0, 1025);
    if (next !== form.get('again')) return show(reply, s, 400, { passwordError: 'The new passwords differ.' });
    try {
      checkNewPassword(next);
    } catch (err) {
      if (!(err instanceof VaultInputError)) throw err;
      return show(reply, s, 400, { passwordError: `${err.message[0]?.toUpperCase()}${err.message.slice(1)}.` });
    }
    // The current password is a sign-in: throttled and audited like one, so a left-open session cannot guess it.
    const outcome = await checkLogin(o, req, s.username, (form.get('current') ?? '').slice(0, 1024), ACCOUNT_CLIENT);
    if (!outcome.ok) {
      if (outcome.retryAfterSeconds) void reply.header('retry-after', String(outcome.retryAfterSeconds));
      const wrong = outcome.status === 401 ? 'The current password is not correct.' : outcome.error;
      return show(reply, s, outcome.status, { passwordError: wrong });
    }
    await setPassword(o.store, s.username, next);
    await o.audit.record({
      type: EVENT.securityAttributesChanged,
      subtype: EVENT.passwordChanged,
      action: 'U',
      outcome: '0',
      outcomeDesc: 'password changed by the user (account page)',
      who: personAt(req, ACCOUNT_CLIENT, s.username),
      clientRole: '110150',
    });
    req.log.info({ event: 'password-changed', username: s.username }, 'password changed');
    // Every other session of this person ends with the old password; this one goes on under a new id.
    await sessions.end(s.id);
    const user = await o.store.users.get(s.username);
    const renewed =
      user && (await sessions.create({ username: user.username, credential: credentialOf(user.passwordHash) }));
    return reply
      .header('set-cookie', sessions.cookie(renewed))
      .header('cache-control', 'no-store')
      .redirect('/account?done=password', 303);
  });

  app.post('/account/consents/withdraw', async (req, reply) => {
    const signed = await signedForm(req, reply);
    if (!signed) return reply;
    const { s, form } = signed;
    const grant = form.get('grant') ?? '';
    const { revoked } = grant
      ? await withdrawConsents(
          o.store,
          o.audit,
          s.username,
          { grant },
          {
            outcomeDesc: 'consent withdrawn by the user (account page)',
            who: personAt(req, ACCOUNT_CLIENT, s.username),
          },
        )
      : { revoked: [] };
    if (revoked.length === 0) {
      return fail(reply, 404, 'not_found', 'That access was not found: it may have been withdrawn or expired.');
    }
    req.log.info(
      { event: 'consent-withdrawn', username: s.username, client: revoked[0]?.client_id },
      'consent withdrawn',
    );
    return reply.header('cache-control', 'no-store').redirect('/account?done=withdrawn', 303);
  });

  // A delegate may stop acting for someone (least privilege); only an administrator can give a delegation.
  app.post('/account/delegations/end', async (req, reply) => {
    const signed = await signedForm(req, reply);
    if (!signed) return reply;
    const { s, form } = signed;
    const partition = form.get('vault') ?? '';
    const patient = form.get('patient') ?? '';
    const ended =
      PARTITION_RE.test(partition) &&
      ID_RE.test(patient) &&
      (await o.store.users.removeDelegation(partition, s.username, patient));
    if (!ended) return fail(reply, 404, 'not_found', 'You do not act for that record (any more).');
    // The consents he gave apps for that record would reach nothing now: they go with it.
    await withdrawConsents(
      o.store,
      o.audit,
      s.username,
      { record: { partition, patient } },
      {
        outcomeDesc: 'consent withdrawn: the user stopped acting for the record (account page)',
        who: personAt(req, ACCOUNT_CLIENT, s.username),
      },
    );
    await o.audit.record({
      type: EVENT.securityAttributesChanged,
      subtype: EVENT.delegationEnded,
      action: 'U',
      outcome: '0',
      outcomeDesc: `${s.username} no longer acts for Patient/${patient}: ended by the user (account page)`,
      who: personAt(req, ACCOUNT_CLIENT, s.username),
      clientRole: '110150',
      partition,
      patients: [`Patient/${patient}`],
    });
    req.log.info({ event: 'delegation-ended', username: s.username, partition }, 'delegation ended by the user');
    return reply.header('cache-control', 'no-store').redirect('/account?done=delegation', 303);
  });
}
