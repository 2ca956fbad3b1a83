import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errors, type InteractionResults } from 'oidc-provider';
import { EVENT } from '../../audit/balp.ts';
import type { AuditTrail } from '../../audit/trail.ts';
import type { LoginThrottle } from '../../people/login-throttle.ts';
import type { Store } from '../../store/types.ts';
import { vaultOf } from '../audience.ts';
import type { ClientRegistry } from '../clients.ts';
import { errorHtml } from '../error-page.ts';
import type { AuthServer } from '../index.ts';
import type { KeyRing } from '../keys.ts';
import { claimLaunch, findLaunch, type GrantContext, saveGrantContext } from '../launch-context.ts';
import { describeScope, PERSON_OIDC_SCOPES, personResourceScopes } from '../person-scopes.ts';
import { parseSmartScope, splitScope } from '../smart-scopes.ts';
import { csrfMatches, csrfToken } from './csrf.ts';
import { acceptForms, formOf, sendPage } from './forms.ts';
import { checkLogin, credentialsOf, personAt } from './login.ts';
import { parsePatientChoice, patientChoices } from './patients.ts';
import { consentPage, loginPage, type PatientChoice, type ScopeChoice } from './views.ts';

export interface InteractionOptions {
  auth: AuthServer;
  store: Store;
  clients: ClientRegistry;
  keys: KeyRing;
  fhirBase: string;
  /** Default `smart_style_url` of EHR launches. */
  styleUrl: string;
  grantTtlSeconds: number;
  audit: AuditTrail;
  /** Shared by every node when it is Redis-backed. */
  throttle: LoginThrottle;
}

/** Scopes that make the launch work and so are not offered for unticking. */
const FIXED = new Set(['openid', 'launch', 'launch/patient', 'launch/encounter']);
type Params = { uid: string };
type Details = Awaited<ReturnType<AuthServer['engine']['interactionDetails']>>;

/**
 * The login and consent pages of the authorization code flow (SMART App Launch, IUA ITI-71): server
 * rendered, CSRF-protected, no external assets. They drive the engine through interactionDetails /
 * interactionResult; the grant they create carries the consented scopes and the launch context.
 */
export async function interactionRoutes(app: FastifyInstance, o: InteractionOptions): Promise<void> {
  const csrfKey = () => o.keys.cookieKeys[0] as string;

  acceptForms(app);
  const send = sendPage;
  const fail = (reply: FastifyReply, status: number, error: string, description: string) =>
    send(reply, status, (nonce) => errorHtml(error, description, nonce));

  /** Finishes the interaction (login, consent or an error for the app) and sends the browser on. */
  const finish = async (req: FastifyRequest, reply: FastifyReply, result: InteractionResults) => {
    const to = await o.auth.engine.interactionResult(req.raw, reply.raw, result, { mergeWithLastSubmission: true });
    return reply.code(303).header('cache-control', 'no-store').redirect(to, 303);
  };

  const details = async (
    req: FastifyRequest<{ Params: Params }>,
    reply: FastifyReply,
  ): Promise<Details | undefined> => {
    try {
      const d = await o.auth.engine.interactionDetails(req.raw, reply.raw);
      if (d.uid === req.params.uid) return d;
    } catch (err) {
      if (!(err instanceof errors.SessionNotFound)) throw err;
    }
    await fail(reply, 400, 'invalid_request', 'This sign-in page has expired or was opened in another browser.');
    return undefined;
  };

  /** The interaction of a posted form, once its CSRF token is verified; otherwise the answer is already sent. */
  const posted = async (req: FastifyRequest<{ Params: Params }>, reply: FastifyReply) => {
    const d = await details(req, reply);
    if (!d) return undefined;
    const form = formOf(req);
    if (!csrfMatches(csrfKey(), d.uid, form.get('csrf'))) {
      await fail(reply, 403, 'invalid_request', 'The form could not be verified (CSRF token missing or wrong).');
      return undefined;
    }
    return { d, form };
  };

  const appName = async (clientId: string) => {
    const meta = await o.clients.engineMetadata(clientId);
    return typeof meta?.client_name === 'string' ? meta.client_name : clientId;
  };

  /** B12/B13: an EHR launch must name a live launch of this app; `launch` scope without one is refused. */
  const launchProblem = async (d: Details): Promise<string | undefined> => {
    const params = d.params as { launch?: string; scope?: string; client_id: string };
    if (params.launch === undefined) {
      return splitScope(params.scope).includes('launch') ? 'the launch scope needs a launch parameter' : undefined;
    }
    const launch = await findLaunch(o.store, params.launch, params.client_id);
    if (!launch) return 'the launch is unknown, expired or already used';
    const pinned = vaultOf(String((d.params as { resource?: string }).resource ?? ''), o.fhirBase);
    if (pinned !== undefined && pinned !== launch.partition) return 'the launch belongs to another FHIR base than aud';
    return undefined;
  };

  /**
   * The picker shows the person's patients by name and birth date, read from their vaults: patient data shown,
   * so audited as a search of Patients in each vault (BALP query event), with the person as the user.
   */
  const auditPicker = async (req: FastifyRequest, d: Details, patients: PatientChoice[] | undefined) => {
    const byVault = new Map<string, string[]>();
    for (const choice of patients ?? []) {
      const picked = parsePatientChoice(choice.value);
      if (!picked) continue;
      byVault.set(picked.partition, [...(byVault.get(picked.partition) ?? []), `Patient/${picked.patient}`]);
    }
    const who = personAt(req, String(d.params.client_id), String(d.session?.accountId));
    await o.audit.record(
      ...[...byVault].map(([partition, shown]) => ({
        type: EVENT.rest,
        subtype: EVENT.rest_('search-type'),
        action: 'E' as const,
        outcome: '0' as const,
        outcomeDesc: 'patients offered in the launch patient picker',
        who,
        clientRole: '110150' as const,
        partition,
        patients: shown,
        query: { raw: 'Patient', description: 'Patient (launch patient picker)' },
        nen7513: { autorisatieprotocol: 'user-rights' },
      })),
    );
  };

  const consentView = async (d: Details, error?: string) => {
    const params = d.params as { scope?: string; client_id: string; launch?: string; resource?: string };
    const policy = await o.clients.policy(params.client_id);
    const requested = splitScope(params.scope);
    const resourceScopes = policy ? personResourceScopes(params.scope, policy) : [];
    const oidc = requested.filter((s) => (PERSON_OIDC_SCOPES as readonly string[]).includes(s));
    const scopes: ScopeChoice[] = [...oidc, ...resourceScopes].map((scope) => ({
      scope,
      text: describeScope(scope),
      fixed: FIXED.has(scope),
    }));
    const username = String(d.session?.accountId);
    const wantsPatient =
      params.launch === undefined &&
      (requested.includes('launch/patient') || resourceScopes.some((s) => s.startsWith('patient/')));
    const launch = params.launch ? await findLaunch(o.store, params.launch, params.client_id) : undefined;
    return {
      uid: d.uid,
      csrf: csrfToken(csrfKey(), d.uid),
      appName: await appName(params.client_id),
      username,
      scopes,
      patients: wantsPatient
        ? await patientChoices(o.store, username, vaultOf(String(params.resource ?? ''), o.fhirBase))
        : undefined,
      launchPatient: launch?.patient ? `Patient/${launch.patient}` : undefined,
      error,
    };
  };

  app.get<{ Params: Params }>('/oauth/interaction/:uid', async (req, reply) => {
    const d = await details(req, reply);
    if (!d) return reply;
    const problem = await launchProblem(d);
    if (problem) return finish(req, reply, { error: 'invalid_request', error_description: problem });
    if (d.prompt.name === 'login') {
      const appNameText = await appName(String(d.params.client_id));
      return send(reply, 200, (n) =>
        loginPage({ uid: d.uid, csrf: csrfToken(csrfKey(), d.uid), appName: appNameText }, n),
      );
    }
    const view = await consentView(d);
    await auditPicker(req, d, view.patients);
    return send(reply, 200, (n) => consentPage(view, n));
  });

  app.post<{ Params: Params }>('/oauth/interaction/:uid/login', async (req, reply) => {
    const submitted = await posted(req, reply);
    if (!submitted) return reply;
    const { d, form } = submitted;
    if (d.prompt.name !== 'login') return reply.redirect(`/oauth/interaction/${d.uid}`, 303);
    const { username, password } = credentialsOf(form);
    const clientId = String(d.params.client_id);
    const outcome = await checkLogin(o, req, username, password, clientId);
    if (!outcome.ok) {
      if (outcome.retryAfterSeconds) void reply.header('retry-after', String(outcome.retryAfterSeconds));
      const name = await appName(clientId);
      return send(reply, outcome.status, (n) =>
        loginPage({ uid: d.uid, csrf: csrfToken(csrfKey(), d.uid), appName: name, username, error: outcome.error }, n),
      );
    }
    return finish(req, reply, { login: { accountId: username } });
  });

  app.post<{ Params: Params }>('/oauth/interaction/:uid/abort', async (req, reply) => {
    if (!(await posted(req, reply))) return reply;
    return finish(req, reply, { error: 'access_denied', error_description: 'the user cancelled the sign-in' });
  });

  app.post<{ Params: Params }>('/oauth/interaction/:uid/consent', async (req, reply) => {
    const submitted = await posted(req, reply);
    if (!submitted) return reply;
    const { d, form } = submitted;
    if (d.prompt.name !== 'consent' || !d.session?.accountId) return reply.redirect(`/oauth/interaction/${d.uid}`, 303);
    if (form.get('decision') !== 'allow') {
      return finish(req, reply, { error: 'access_denied', error_description: 'the user denied access' });
    }
    const problem = await launchProblem(d);
    if (problem) return finish(req, reply, { error: 'invalid_request', error_description: problem });
    const view = await consentView(d);
    const ticked = new Set(form.getAll('scope'));
    const granted = view.scopes.filter((s) => s.fixed || ticked.has(s.scope)).map((s) => s.scope);
    const params = d.params as { client_id: string; launch?: string; resource?: string };
    const username = String(d.session.accountId);
    const user = await o.store.users.get(username);
    const pinned = vaultOf(String(params.resource ?? ''), o.fhirBase);
    let context: GrantContext = { username, partition: pinned };
    if (params.launch) {
      const launch = await findLaunch(o.store, params.launch, params.client_id);
      if (!launch || !(await claimLaunch(o.store, params.launch))) {
        return finish(req, reply, { error: 'invalid_request', error_description: 'the launch was already used' });
      }
      const { clientId: _app, ...rest } = launch;
      context = {
        ...rest,
        username,
        fhirUser: launch.fhirUser ?? (user?.partition === launch.partition ? user.fhirUser : undefined),
        needPatientBanner: launch.needPatientBanner ?? true,
        smartStyleUrl: launch.smartStyleUrl ?? o.styleUrl,
      };
    } else if (view.patients) {
      const picked = parsePatientChoice(form.get('patient'));
      if (!picked || !view.patients.some((p) => p.value === `${picked.partition}/${picked.patient}`)) {
        const again = await consentView(d, 'Choose the patient whose record the app may use.');
        await auditPicker(req, d, again.patients);
        return send(reply, 400, (n) => consentPage(again, n));
      }
      context = { username, partition: picked.partition, patient: picked.patient };
    }
    if (!context.fhirUser && user?.fhirUser && (context.partition ?? user.partition) === user.partition) {
      context.fhirUser = user.fhirUser;
      context.partition ??= user.partition;
    }
    const grant = new o.auth.engine.Grant({ accountId: username, clientId: params.client_id });
    const oidc = granted.filter((s) => parseSmartScope(s) === undefined);
    const resource = granted.filter((s) => parseSmartScope(s) !== undefined);
    if (oidc.length) grant.addOIDCScope(oidc.join(' '));
    if (resource.length && params.resource) grant.addResourceScope(params.resource, resource.join(' '));
    // Unticked scopes are recorded as refused, so the engine does not ask for them again (N22).
    const refused = view.scopes.filter((s) => !granted.includes(s.scope)).map((s) => s.scope);
    const refusedOidc = refused.filter((s) => parseSmartScope(s) === undefined);
    const refusedResource = refused.filter((s) => parseSmartScope(s) !== undefined);
    if (refusedOidc.length) grant.rejectOIDCScope(refusedOidc.join(' '));
    if (refusedResource.length && params.resource)
      grant.rejectResourceScope(params.resource, refusedResource.join(' '));
    const grantId = await grant.save();
    await saveGrantContext(o.store, grantId, context, Math.floor(Date.now() / 1000) + o.grantTtlSeconds);
    req.log.info({ event: 'consent', username, client: params.client_id, scope: granted.join(' ') }, 'consent given');
    await o.audit.record({
      type: EVENT.securityAttributesChanged,
      subtype: EVENT.consentGiven,
      action: 'C',
      outcome: '0',
      outcomeDesc: `granted: ${granted.join(' ')}`,
      who: personAt(req, params.client_id, username),
      clientRole: '110150',
      partition: context.partition,
      patients: context.patient ? [`Patient/${context.patient}`] : undefined,
      nen7513: { toestemmingsprofiel: grantId },
    });
    return finish(req, reply, { consent: { grantId } });
  });
}
