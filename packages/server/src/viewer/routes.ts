import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  CarevaultError,
  DocumentAcceptError,
  DocumentUrlError,
  FhirResponseError,
  InvalidBsnError,
  type Professional,
} from '@carevault/sdk';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type AuditTrail, anonymous } from '../audit/trail.ts';
import type { AuthServer } from '../auth/index.ts';
import type { CertificateSource } from '../auth/mtls.ts';
import { splitScope } from '../auth/smart-scopes.ts';
import type { Config } from '../config/index.ts';
import { authenticate, insufficientScope } from '../fhir/bearer.ts';
import { fhirErrors } from '../fhir/error-handler.ts';
import { FhirError } from '../fhir/errors.ts';
import { correlationOf } from '../http/correlation.ts';
import { cookieValue } from '../http/stored-sessions.ts';
import { loadIdps } from '../saml/idps.ts';
import { LaunchRefused } from '../saml/mapping.ts';
import { samlEndpoint, validateSamlResponse } from '../saml/validate.ts';
import type { Store } from '../store/types.ts';
import { launchEvent, professionalWho, sessionEvent } from './audit.ts';
import { launchedPage, launchRefusedPage, noSessionPage, signedOutPage } from './pages.ts';
import { NoConsentError, ViewerRuntime } from './runtime.ts';
import { sessionIdOf, type ViewerSession, ViewerSessions } from './session.ts';
import { loadSettings, publicJwks, ViewerInputError } from './settings.ts';
import { appFor } from './smart-apps.ts';
import { PENDING_TTL, SmartLaunch } from './smart-launch.ts';
import { patientOfWorkflow } from './workflow-task.ts';

/** The SMART launch's browser binding (smart-launch.ts `start`), sent back to the callback only. */
const LAUNCH_COOKIE = 'cv_launch';

export interface ViewerRouteOptions {
  config: Config;
  store: Store;
  auth: AuthServer;
  certificates: CertificateSource;
  fhirBase: string;
  audit: AuditTrail;
}

/** The scope a front end needs for the aggregator API. */
export const VIEWER_SCOPE = 'zorgviewer';

/** The built web app (packages/viewer, `npm run build`). */
const APP_DIR = fileURLToPath(new URL('../../../viewer/dist/', import.meta.url));

/** The app's pages may load only their own scripts and styles; nothing inline, never framed. */
const APP_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; " +
  "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/**
 * The Zorgviewer on this platform: its JWKS, the SAML launch (ACS), the web app behind a session cookie, and the
 * aggregator API — for the app (session) or for a front end of its own (a Bearer token of this platform with
 * scope `zorgviewer` whose client asserted the professional's context).
 */
export async function viewerRoutes(app: FastifyInstance, o: ViewerRouteOptions): Promise<void> {
  let runtime: Promise<ViewerRuntime> | undefined;
  const viewer = () => {
    if (!loadSettings(o.config.dataDir)) throw new FhirError(404, 'not-found', 'the viewer is not set up here');
    runtime ??= ViewerRuntime.open(o.config, o.audit);
    runtime.catch(() => {
      runtime = undefined;
    });
    return runtime;
  };
  app.addHook('onClose', async () => {
    if (runtime) await (await runtime).close();
  });
  const sessions = new ViewerSessions(
    o.store,
    o.config.viewerSession.maxAgeSeconds,
    o.config.viewerSession.idleSeconds,
  );
  const ids = (req: FastifyRequest) => ({ address: req.ip, ...correlationOf(req.raw) });
  const sessionOf = (req: FastifyRequest) => sessions.get(sessionIdOf(req.headers.cookie));

  app.get('/viewer/jwks', async (_req, reply) => {
    const jwks = publicJwks(o.config.dataDir);
    if (!jwks) return reply.code(404).send({ error: 'the viewer is not set up here' });
    return reply.header('cache-control', 'max-age=300').send(jwks);
  });

  await app.register(async (web) => {
    // IdPs post the SAML Response as a form.
    web.addContentTypeParser(
      'application/x-www-form-urlencoded',
      { parseAs: 'string', bodyLimit: 512 * 1024 },
      (_r, body, done) => done(null, Object.fromEntries(new URLSearchParams(body as string))),
    );

    const smart = new SmartLaunch(o.store, o.config.dataDir, `${o.config.baseUrl}/viewer/launch/callback`);
    web.addHook('onClose', () => smart.close());
    const refuse = async (req: FastifyRequest, reply: FastifyReply, via: string, err: unknown) => {
      if (!(err instanceof LaunchRefused)) throw err;
      await o.audit.bestEffort(
        launchEvent({ ok: false, via, reason: err.message }, anonymous(req.ip, correlationOf(req.raw))),
      );
      return launchRefusedPage(reply, err.message);
    };

    web.post('/viewer/saml/acs', async (req, reply) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      let via = 'saml';
      try {
        if (!loadSettings(o.config.dataDir)) throw new LaunchRefused('the viewer is not set up here');
        const launch = await validateSamlResponse(
          body.SAMLResponse,
          loadIdps(o.config.dataDir),
          samlEndpoint(o.config.baseUrl),
          o.store,
        );
        via = launch.idp.name;
        const { context } = launch;
        const professional: Professional = {
          id: context.practitioner.id,
          role: context.practitioner.role,
          organizationOid: context.organizationOid,
          name: context.practitioner.name,
        };
        const patient = context.patient.bsn
          ? { ...context.patient, bsn: context.patient.bsn }
          : await patientOfWorkflow(await viewer(), launch.idp, context.workflowId as string, professional);
        const session = await sessions.create({ professional, patient, via });
        await o.audit.record(launchEvent({ ok: true, via, bsn: patient.bsn }, professionalWho(professional, ids(req))));
        return launchedPage(reply, sessions.cookie(session));
      } catch (err) {
        return refuse(req, reply, via, err);
      }
    });

    // Lax: the EHR's redirect back is a top-level navigation from another site, which Strict would not send it on.
    const launchCookie = (value: string, maxAge: number) =>
      `${LAUNCH_COOKIE}=${value}; Path=/viewer/launch; HttpOnly; Secure; SameSite=Lax; Max-Age=${maxAge}`;
    // seq-1-fhir: the EHR opens /viewer/launch?iss=…&launch=… (SMART EHR launch).
    web.get('/viewer/launch', async (req, reply) => {
      const q = req.query as Record<string, unknown>;
      const iss = typeof q.iss === 'string' ? q.iss : '';
      try {
        if (!loadSettings(o.config.dataDir)) throw new LaunchRefused('the viewer is not set up here');
        const app = appFor(o.config.dataDir, iss);
        if (!app) throw new LaunchRefused('the viewer is not registered at this EHR (iss)');
        const started = await smart.start(app, typeof q.launch === 'string' ? q.launch : '');
        return reply.header('set-cookie', launchCookie(started.browser, PENDING_TTL)).redirect(started.url, 303);
      } catch (err) {
        return refuse(req, reply, `smart:${iss.slice(0, 200)}`, err);
      }
    });

    web.get('/viewer/launch/callback', async (req, reply) => {
      const browser = cookieValue(req.headers.cookie, LAUNCH_COOKIE);
      void reply.header('set-cookie', launchCookie('', 0));
      try {
        const url = new URL(req.raw.url ?? '', `${o.config.baseUrl}/`);
        const done = await smart.finish((iss) => appFor(o.config.dataDir, iss), url, browser);
        const via = `smart:${done.ehr}`;
        const session = await sessions.create({ professional: done.professional, patient: done.patient, via });
        await o.audit.record(
          launchEvent({ ok: true, via, bsn: done.patient.bsn }, professionalWho(done.professional, ids(req))),
        );
        return launchedPage(reply, sessions.cookie(session));
      } catch (err) {
        return refuse(req, reply, 'smart', err);
      }
    });

    web.post('/viewer/logout', async (req, reply) => {
      const session = await sessionOf(req);
      if (session) {
        await sessions.end(session.id);
        await o.audit.record(
          sessionEvent('sign-out', session.patient.bsn, professionalWho(session.professional, ids(req))),
        );
      }
      return signedOutPage(reply, sessions.cookie(undefined));
    });

    const appPage = async (req: FastifyRequest, reply: FastifyReply) => {
      const session = await sessionOf(req);
      if (!session) return noSessionPage(reply);
      if (!existsSync(`${APP_DIR}index.html`)) {
        return reply.code(503).type('text/plain').send('the viewer app is not built: run npm run build');
      }
      await o.audit.record(
        sessionEvent('page-view', session.patient.bsn, professionalWho(session.professional, ids(req))),
      );
      return reply
        .header('content-security-policy', APP_CSP)
        .header('cache-control', 'no-store')
        .header('referrer-policy', 'no-referrer')
        .sendFile('index.html', APP_DIR);
    };
    web.get('/viewer/', appPage);
    if (existsSync(APP_DIR)) {
      await web.register(fastifyStatic, { root: `${APP_DIR}assets`, prefix: '/viewer/assets/', index: false });
    } else {
      await web.register(fastifyStatic, { root: APP_DIR, serve: false });
    }
  });

  await app.register(async (api) => {
    fhirErrors(api, o.audit);

    /** The session's professional and patient, or the professional a Bearer token names (no patient). */
    const callerOf = async (req: FastifyRequest): Promise<{ professional: Professional; session?: ViewerSession }> => {
      if (!req.headers.authorization) {
        const session = await sessionOf(req);
        if (!session) throw new FhirError(401, 'login', 'no viewer session; open the viewer from your EHR');
        return { professional: session.professional, session };
      }
      const cert = o.certificates.certificate({ socket: req.raw.socket, headers: req.headers });
      const claims = await authenticate(req, o.auth.verifier, cert, [o.fhirBase]);
      if (!splitScope(claims.scope).includes(VIEWER_SCOPE)) throw insufficientScope(`needs the scope ${VIEWER_SCOPE}`);
      const iua = claims.extensions?.ihe_iua ?? {};
      const role = Array.isArray(iua.subject_role) ? (iua.subject_role[0] as { code?: unknown })?.code : undefined;
      const org = iua.subject_organization_id;
      if (typeof iua.subject_id !== 'string' || typeof role !== 'string' || typeof org !== 'string') {
        throw new FhirError(
          403,
          'forbidden',
          'the token names no professional (subject_id, subject_role, subject_organization_id)',
        );
      }
      return {
        professional: {
          id: iua.subject_id,
          role,
          organizationOid: org,
          name: typeof iua.subject_name === 'string' ? iua.subject_name : undefined,
          organizationName: typeof iua.subject_organization === 'string' ? iua.subject_organization : undefined,
        },
      };
    };
    const text = (q: Record<string, unknown>, name: string): string => {
      const v = q[name];
      if (typeof v !== 'string' || v.length === 0 || v.length > 2048)
        throw new FhirError(400, 'required', `${name} is required`);
      return v;
    };
    /** A session may only look at its own patient; a Bearer caller names one. */
    const bsnOf = (caller: { session?: ViewerSession }, given: unknown): string => {
      if (caller.session) return caller.session.patient.bsn;
      return text({ bsn: given }, 'bsn');
    };

    api.get('/viewer/api/session', async (req) => {
      const { session } = await callerOf(req);
      if (!session) throw new FhirError(400, 'invalid', 'this is the session of the web app; a token has none');
      return {
        professional: session.professional,
        patient: session.patient,
        via: session.via,
        expiresAt: new Date(session.createdAt + sessions.maxAgeSeconds * 1000).toISOString(),
      };
    });

    api.get('/viewer/api/sources', async (req) => {
      const { professional } = await callerOf(req);
      return asFhir(async () => (await viewer()).sources(professional));
    });

    api.get('/viewer/api/record', async (req) => {
      const caller = await callerOf(req);
      const q = req.query as Record<string, unknown>;
      const only = typeof q.source === 'string' ? [q.source] : undefined;
      return asFhir(async () => (await viewer()).query(bsnOf(caller, q.bsn), caller.professional, { only }));
    });

    api.post('/viewer/api/query', async (req) => {
      const caller = await callerOf(req);
      const body = (req.body ?? {}) as Record<string, unknown>;
      return asFhir(async () => (await viewer()).query(bsnOf(caller, body.bsn), caller.professional));
    });

    api.get('/viewer/api/document', async (req, reply) => {
      const caller = await callerOf(req);
      const q = req.query as Record<string, unknown>;
      const doc = await asFhir(async () =>
        (await viewer()).document({
          bsn: bsnOf(caller, q.bsn),
          sourceOid: text(q, 'source'),
          url: text(q, 'url'),
          accept: typeof q.accept === 'string' ? q.accept : undefined,
          professional: caller.professional,
        }),
      );
      return reply
        .header('content-type', doc.contentType ?? 'application/octet-stream')
        .header('x-content-type-options', 'nosniff')
        .header('content-security-policy', "sandbox; default-src 'none'")
        .send(Buffer.from(doc.data));
    });
  });
}

/** The aggregator's refusals as OperationOutcomes: no consent 403, bad input 400, a source's 404/410/406 as such, a failure 502. */
async function asFhir<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof NoConsentError) throw new FhirError(403, 'forbidden', err.message);
    if (
      err instanceof ViewerInputError ||
      err instanceof InvalidBsnError ||
      err instanceof DocumentUrlError ||
      err instanceof DocumentAcceptError
    )
      throw new FhirError(400, 'invalid', err.message);
    // The source's own final word on a document (never there, gone, not in the format asked for) is the answer:
    // as a 502 "transient" it told the caller to try again. A failure to get any answer stays 502.
    if (err instanceof FhirResponseError && (err.status === 404 || err.status === 410 || err.status === 406)) {
      throw new FhirError(err.status, err.status === 406 ? 'not-supported' : 'not-found', err.message);
    }
    if (err instanceof CarevaultError) throw new FhirError(502, 'transient', err.message);
    throw err;
  }
}
