import { CarevaultError, DocumentUrlError, InvalidBsnError, type Professional } from '@carevault/sdk';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuditTrail } from '../audit/trail.ts';
import type { AuthServer } from '../auth/index.ts';
import type { CertificateSource } from '../auth/mtls.ts';
import { splitScope } from '../auth/smart-scopes.ts';
import type { Config } from '../config/index.ts';
import { authenticate, insufficientScope } from '../fhir/bearer.ts';
import { fhirErrors } from '../fhir/error-handler.ts';
import { FhirError } from '../fhir/errors.ts';
import { NoConsentError, ViewerRuntime } from './runtime.ts';
import { loadSettings, publicJwks, ViewerInputError } from './settings.ts';

export interface ViewerRouteOptions {
  config: Config;
  auth: AuthServer;
  certificates: CertificateSource;
  fhirBase: string;
  audit: AuditTrail;
}

/** The scope a front end needs for the aggregator API. */
export const VIEWER_SCOPE = 'zorgviewer';

/**
 * The viewer's public key set (`jwksUri` of `viewer init`: sources verify assertions and X-ZV-Context with it) and
 * the aggregator API. The API takes a token of this platform with scope `zorgviewer` whose client asserted the
 * professional's context (IUA claims, `--assert-user-context`): the person in the token is who looks.
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

  app.get('/viewer/jwks', async (_req, reply) => {
    const jwks = publicJwks(o.config.dataDir);
    if (!jwks) return reply.code(404).send({ error: 'the viewer is not set up here' });
    return reply.header('cache-control', 'max-age=300').send(jwks);
  });

  await app.register(async (api) => {
    fhirErrors(api, o.audit);
    const professionalOf = async (req: FastifyRequest): Promise<Professional> => {
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
        id: iua.subject_id,
        role,
        organizationOid: org,
        name: typeof iua.subject_name === 'string' ? iua.subject_name : undefined,
        organizationName: typeof iua.subject_organization === 'string' ? iua.subject_organization : undefined,
      };
    };
    const text = (q: Record<string, unknown>, name: string): string => {
      const v = q[name];
      if (typeof v !== 'string' || v.length === 0 || v.length > 2048)
        throw new FhirError(400, 'required', `${name} is required`);
      return v;
    };

    api.post('/viewer/api/query', async (req) => {
      const professional = await professionalOf(req);
      const body = (req.body ?? {}) as Record<string, unknown>;
      return asFhir(async () => (await viewer()).query(text(body, 'bsn'), professional));
    });

    api.get('/viewer/api/document', async (req, reply) => {
      const professional = await professionalOf(req);
      const q = req.query as Record<string, unknown>;
      const doc = await asFhir(async () =>
        (await viewer()).document({
          bsn: text(q, 'bsn'),
          sourceOid: text(q, 'source'),
          url: text(q, 'url'),
          accept: typeof q.accept === 'string' ? q.accept : undefined,
          professional,
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

/** The aggregator's refusals as OperationOutcomes: no consent 403, bad input 400, a source's failure 502. */
async function asFhir<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof NoConsentError) throw new FhirError(403, 'forbidden', err.message);
    if (err instanceof ViewerInputError || err instanceof InvalidBsnError || err instanceof DocumentUrlError)
      throw new FhirError(400, 'invalid', err.message);
    if (err instanceof CarevaultError) throw new FhirError(502, 'transient', err.message);
    throw err;
  }
}
