import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Parameters } from 'fhir/r4.js';
import { EVENT, type Outcome } from '../audit/balp.ts';
import { type AuditTrail, anonymous, whoFromToken } from '../audit/trail.ts';
import type { AuthServer } from '../auth/index.ts';
import type { CertificateSource } from '../auth/mtls.ts';
import { splitScope } from '../auth/smart-scopes.ts';
import type { AccessTokenClaims } from '../auth/verifier.ts';
import { authenticate, insufficientScope } from '../fhir/bearer.ts';
import { FhirError, type IssueCode, operationOutcome, storeErrorAsFhir } from '../fhir/errors.ts';
import { FHIR_JSON } from '../fhir/format.ts';
import { correlationOf } from '../http/correlation.ts';
import { drainBody } from '../http/request-limits.ts';
import type { Store } from '../store/types.ts';
import { AIM_SCOPES, asIdentifier, lookupAccount, mpiIdFromToken } from './lookup.ts';

export interface AimOptions {
  store: Store;
  auth: AuthServer;
  certificates: CertificateSource;
  fhirBase: string;
  audit: AuditTrail;
}

const ACCOUNT_SYSTEM = 'urn:ietf:rfc:3986';

/**
 * The identifier service (AIM): CARA's `get-account-urn-from-mpi-id-urn` and IHE PIXm `$ihe-pix` (ITI-83),
 * both behind a token with an AIM scope; every lookup is audited (Query, ITI-83).
 */
export async function aimRoutes(app: FastifyInstance, o: AimOptions): Promise<void> {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    ['application/json', 'application/fhir+json'],
    { parseAs: 'string', bodyLimit: 16 * 1024 },
    app.getDefaultJsonParser('error', 'error'),
  );

  const caller = async (req: FastifyRequest): Promise<AccessTokenClaims> => {
    const cert = o.certificates.certificate({ socket: req.raw.socket, headers: req.headers });
    const claims = await authenticate(req, o.auth.verifier, cert, [o.fhirBase]);
    const scopes = splitScope(claims.scope);
    (req as FastifyRequest & { aimClaims?: AccessTokenClaims }).aimClaims = claims;
    if (!AIM_SCOPES.some((s) => scopes.includes(s))) {
      throw insufficientScope(`identifier lookups need one of the scopes ${AIM_SCOPES.join(', ')}`);
    }
    return claims;
  };

  const audit = (
    req: FastifyRequest,
    claims: AccessTokenClaims | undefined,
    outcome: Outcome,
    desc: string,
    raw: string,
    account?: string,
  ) =>
    o.audit.record({
      type: EVENT.query,
      subtype: EVENT.iti83,
      action: 'E',
      outcome,
      outcomeDesc: desc,
      who: claims ? whoFromToken(claims, req.ip, correlationOf(req.raw)) : anonymous(req.ip, correlationOf(req.raw)),
      clientRole: '110153',
      partition: account,
      query: { raw, description: 'MPI id → account' },
    });

  app.setErrorHandler(async (thrown, req, reply) => {
    const err = storeErrorAsFhir(thrown);
    const e = err instanceof FhirError ? err : undefined;
    const status =
      e?.status ??
      ((err as { statusCode?: number }).statusCode && (err as { statusCode: number }).statusCode < 500
        ? (err as { statusCode: number }).statusCode
        : 500);
    if (status === 500) req.log.error({ err: { message: (err as Error).message } }, 'AIM request failed');
    const claims = (req as FastifyRequest & { aimClaims?: AccessTokenClaims }).aimClaims;
    const asked = (req.body as { mpiIdUrn?: unknown } | undefined)?.mpiIdUrn;
    const raw = typeof asked === 'string' ? asked : (req.raw.url ?? '');
    await audit(req, claims, status >= 500 ? '8' : '4', e?.diagnostics ?? 'bad request', raw).catch((x: Error) =>
      req.log.error({ err: { message: x.message } }, 'could not audit an AIM failure'),
    );
    if (status === 413) await drainBody(req.raw);
    const diagnostics =
      e?.diagnostics ??
      (status === 500
        ? 'internal error'
        : status === 413
          ? 'the request body is too large'
          : 'the request body is not valid JSON');
    if (req.url.startsWith('/aim/api/')) {
      return reply
        .code(status)
        .headers(e?.headers ?? {})
        .send({ error: e?.code ?? 'invalid', message: diagnostics });
    }
    return reply
      .code(status)
      .headers(e?.headers ?? {})
      .type(FHIR_JSON)
      .send(operationOutcome('error', e?.code ?? 'exception', diagnostics));
  });

  // CARA AIM (domain.md §1.2): {"mpiIdUrn": "urn:cara:mpi_id:<oid>/<uuid>"} → {"accountUrn": "urn:cara:account:<id>"}.
  app.post('/aim/api/v1/query/get-account-urn-from-mpi-id-urn', async (req, reply) => {
    const claims = await caller(req);
    const body = req.body as { mpiIdUrn?: unknown } | undefined;
    const mpiIdUrn = body && typeof body === 'object' ? body.mpiIdUrn : undefined;
    if (typeof mpiIdUrn !== 'string')
      throw new FhirError(400, 'invalid', 'send {"mpiIdUrn": "urn:cara:mpi_id:<oid>/<uuid>"}');
    const result = await lookupAccount(o.store, claims, mpiIdUrn);
    if (!result.found || !result.account.accountUrn) {
      const reason = result.found ? 'unknown-id' : result.reason;
      if (reason === 'malformed')
        throw new FhirError(400, 'invalid', 'mpiIdUrn must look like urn:cara:mpi_id:<oid>/<uuid>');
      throw new FhirError(404, 'not-found', 'no account for this MPI id');
    }
    await audit(req, claims, '0', 'found', mpiIdUrn, result.account.name);
    return reply.header('cache-control', 'no-store').send({ accountUrn: result.account.accountUrn });
  });

  // IHE PIXm ITI-83 (K01–K08).
  app.get('/aim/Patient/$ihe-pix', async (req: FastifyRequest, reply: FastifyReply) => {
    const claims = await caller(req);
    const params = [...new URLSearchParams(req.raw.url?.split('?')[1] ?? '')];
    const sources = params.filter(([n]) => n === 'sourceIdentifier').map(([, v]) => v);
    const targets = params.filter(([n]) => n === 'targetSystem').map(([, v]) => v);
    const raw = `Patient/$ihe-pix?${new URLSearchParams(params)}`;
    const refuse = (status: number, code: IssueCode, diagnostics: string): never => {
      throw new FhirError(status, code, diagnostics);
    };
    if (sources.length !== 1) return refuse(400, 'invalid', 'give exactly one sourceIdentifier (system|value)');
    const mpiId = mpiIdFromToken(sources[0] as string);
    if (!mpiId) return refuse(400, 'code-invalid', 'sourceIdentifier Assigning Authority not found');
    const result = await lookupAccount(o.store, claims, mpiId);
    if (!result.found) {
      if (result.reason === 'unknown-id')
        return refuse(404, 'not-found', 'sourceIdentifier Patient Identifier not found');
      return refuse(400, 'code-invalid', 'sourceIdentifier Assigning Authority not found');
    }
    const { account } = result;
    const identifiers = [
      ...(account.accountUrn ? [{ system: ACCOUNT_SYSTEM, value: account.accountUrn }] : []),
      ...account.identifiers.filter((i) => i !== mpiId).flatMap((i) => asIdentifier(i) ?? []),
    ];
    const known = new Set(identifiers.map((i) => i.system));
    for (const t of targets) {
      if (known.has(t) || t === ACCOUNT_SYSTEM) continue;
      const oid = /^urn:oid:([0-2](?:\.(?:0|[1-9][0-9]*))+)$/.exec(t)?.[1];
      // A domain we know but this account has no identifier in answers an empty result, not an error.
      if (!oid || !(await o.store.partitions.hasIdentifierPrefix(`urn:cara:mpi_id:${oid}/`))) {
        return refuse(403, 'code-invalid', 'targetSystem not found');
      }
    }
    const kept = targets.length ? identifiers.filter((i) => targets.includes(i.system)) : identifiers;
    await audit(req, claims, '0', 'found', raw, account.name);
    const body: Parameters = {
      resourceType: 'Parameters',
      parameter: kept.map((valueIdentifier) => ({ name: 'targetIdentifier', valueIdentifier })),
    };
    return reply.type(FHIR_JSON).header('cache-control', 'no-store').send(body);
  });
}
