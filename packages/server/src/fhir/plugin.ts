import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuditWho } from '../audit/balp.ts';
import { type AuditTrail, whoFromToken } from '../audit/trail.ts';
import type { AuthServer } from '../auth/index.ts';
import type { CertificateSource } from '../auth/mtls.ts';
import { correlationOf } from '../http/correlation.ts';
import type { CurrentVersion, Store, StoredVersion } from '../store/types.ts';
import { PARTITION_RE } from '../vault/partitions.ts';
import { decide, grantActive, type Interaction, type Restriction, resolveVaultAccess } from '../vault/policy.ts';
import { auditRead } from './audit.ts';
import { authenticate, challenge, insufficientScope } from './bearer.ts';
import { binaryResource, nativeBinary, RawBinary, sendNativeBinary, wantsNativeBinary } from './binary.ts';
import { fhirBodyParsers } from './body-parsers.ts';
import { allowBrowserApps, appDiscovery } from './browser-apps.ts';
import { bulkExport } from './bulk/export-routes.ts';
import { runBatch } from './bundle/batch.ts';
import { type EntryRequest, parseEntries } from './bundle/entries.ts';
import { responseBundle } from './bundle/results.ts';
import { runTransaction } from './bundle/transaction.ts';
import { capabilityStatement } from './capability.ts';
import { notModified } from './conditional-read.ts';
import type { FhirContext } from './context.ts';
import { fhirErrors } from './error-handler.ts';
import { FhirError, operationOutcome, vaultNotFound } from './errors.ts';
import { bodyMediaType, FHIR_JSON } from './format.ts';
import { compartmentSearchRoutes } from './interactions/compartment-search.ts';
import { create } from './interactions/create.ts';
import { remove } from './interactions/delete.ts';
import { historyRoutes } from './interactions/history.ts';
import { conditionalPatch, type PatchDocument, patch, patchDocument } from './interactions/patch.ts';
import { read, vread } from './interactions/read.ts';
import { search } from './interactions/search.ts';
import { systemSearchRoutes } from './interactions/search-system.ts';
import { parseEtag, update } from './interactions/update.ts';
import { resourceOperationRoutes } from './operations/registry.ts';
import { measureOperations } from './operations/routes.ts';
import { type SubmissionPolicy, sameOrganization } from './operations/submission-policy.ts';
import { provenanceFor, provenanceHeaderValue } from './provenance-header.ts';
import { ID_RE, RESOURCE_TYPES } from './resource-types.ts';
import { ifMatchOf, queryParams, searchForm, strictHandling, type VaultParams } from './route-helpers.ts';
import { assertVersionVisible, assertVisible } from './search/restrictions.ts';
import { readSubset } from './search/subset.ts';
import { withUserContext } from './user-context.ts';
import { negotiate, xmlAnswers } from './xml.ts';

export interface FhirPluginOptions {
  audit: AuditTrail;
  /** Who may submit quality data for whom ($submit-data); default: the client's own organization. */
  submissionPolicy?: SubmissionPolicy | undefined;
  /** Where asynchronous submissions wait (`<data-dir>/jobs`, shared by every node). */
  jobsDir: string;
  issuer: string;
  fhirBase: string;
  store: Store;
  auth: AuthServer;
  certificates: CertificateSource;
  /** Characters of resource JSON one answer may hold (response-size.ts). */
  responseLimit: number;
  /** Where Subscriptions may send notifications (CAREVAULT_SUBSCRIPTION_ENDPOINTS). */
  subscriptionEndpoints: string[];
}

type Params = VaultParams;

/** The FHIR REST API of every vault, under /fhir/{partition}. Every answer that is not a resource is an OperationOutcome. */
export async function fhirRoutes(app: FastifyInstance, o: FhirPluginOptions): Promise<void> {
  fhirBodyParsers(app);
  fhirErrors(app, o.audit);

  // Format first (406 needs no token), then the token (401), then the vault (404) — all before the body is
  // parsed, so a caller learns nothing about a vault, or about body rules, until it holds a token that reaches it.
  app.decorateRequest('fhir', null);
  // Echo the stored Provenance (seed 002: X-Provenance with the server-set target).
  app.addHook('onSend', async (req, reply, payload) => {
    const written = (req as FastifyRequest & { fhir: FhirContext | null }).fhir?.provenanceWritten;
    if (written) void reply.header('x-provenance', provenanceHeaderValue(written));
    return payload;
  });
  xmlAnswers(app);
  app.addHook('onRequest', async (req, reply) => {
    allowBrowserApps(req, reply);
    if (req.method === 'OPTIONS') return;
    const route = req.routeOptions.url;
    if (route?.endsWith('/.well-known/smart-configuration')) return;
    if (!wantsNativeBinary(req)) negotiate(req);
    if (!route || route.endsWith('/metadata')) return;
    (req as FastifyRequest & { fhir: FhirContext | null }).fhir = await resolveContext(
      req as FastifyRequest<{ Params: Params }>,
    );
  });

  const resolveContext = async (req: FastifyRequest<{ Params: Params }>): Promise<FhirContext> => {
    const { partition } = req.params;
    const base = `${o.fhirBase}/${partition}`;
    const cert = o.certificates.certificate({ socket: req.raw.socket, headers: req.headers });
    const claims = await authenticate(req, o.auth.verifier, cert, [o.fhirBase, base]);
    const fromToken = whoFromToken(claims, req.ip, correlationOf(req.raw));
    (req as FastifyRequest & { auditWho?: AuditWho }).auditWho = fromToken;
    const who = await withUserContext(req, claims, fromToken, o.auth.clients, o.auth.clientKeys);
    (req as FastifyRequest & { auditWho?: AuditWho }).auditWho = who;
    if (!PARTITION_RE.test(partition)) throw vaultNotFound();
    if (!(await grantActive(o.store, claims)))
      throw challenge(401, 'invalid_token', 'the grant of this token was revoked');
    const access = await resolveVaultAccess(o.store, partition, claims);
    // A grant row names an existing vault (a foreign key in both stores); only a person's own rights and
    // delegations are looked up here.
    const grantBased = !access?.person || access.host !== undefined;
    if (!access || (!grantBased && !(await o.store.partitions.get(partition)))) throw vaultNotFound();
    const provenance = req.method === 'POST' || req.method === 'PUT' ? provenanceFor(req, access) : undefined;
    const { store, audit, responseLimit, subscriptionEndpoints } = o;
    return { store, partition, base, access, who, audit, provenance, responseLimit, subscriptionEndpoints };
  };
  const context = async (req: FastifyRequest): Promise<FhirContext> => {
    const ctx = (req as FastifyRequest & { fhir: FhirContext | null }).fhir;
    if (!ctx) throw new Error('FHIR context missing');
    return ctx;
  };

  const allow = (ctx: FhirContext, type: string, interaction: Interaction): Restriction[] | undefined => {
    const d = decide(ctx.access, type, interaction);
    if (!d.allowed) throw insufficientScope(d.reason);
    return d.restrictions;
  };

  const typeOf = (req: FastifyRequest<{ Params: Params }>): string => {
    const type = req.params.type as string;
    if (!RESOURCE_TYPES.has(type)) throw new FhirError(404, 'not-supported', `${type} is not an R4 resource type`);
    return type;
  };
  const idOf = (req: FastifyRequest<{ Params: Params }>): string => {
    const id = req.params.id as string;
    if (id.startsWith('$')) {
      // `Type/$name` reaches the instance routes when no route answers that operation with this method.
      throw new FhirError(400, 'not-supported', `${req.method} ${req.params.type}/${id}: no such operation here`);
    }
    if (!ID_RE.test(id)) throw new FhirError(400, 'value', 'id must be 1-64 characters of A-Z a-z 0-9 - .');
    return id;
  };

  const sendVersion = (
    reply: FastifyReply,
    status: number,
    v: CurrentVersion,
    base: string,
    prefer?: string,
    shape?: (content: string, type: string) => string,
  ) => {
    void reply
      .code(status)
      .type(FHIR_JSON)
      .header('etag', `W/"${v.version}"`)
      .header('last-modified', new Date(v.lastUpdated).toUTCString());
    if (status === 201) void reply.header('location', `${base}/${v.type}/${v.id}/_history/${v.version}`);
    if (status === 304) return reply.send();
    const mode = /return=(minimal|representation|OperationOutcome)/.exec(prefer ?? '')?.[1];
    if (mode === 'minimal') return reply.send();
    if (mode === 'OperationOutcome') {
      return reply.send(
        operationOutcome('information', 'informational', `${v.type}/${v.id} version ${v.version} stored`),
      );
    }
    return reply.send(shape && v.content !== undefined ? shape(v.content, v.type) : v.content);
  };

  appDiscovery(app, o.issuer);

  app.get<{ Params: Params }>('/:partition/metadata', async (req, reply) => {
    // The statement is the same for every vault and needs no token, so it says nothing about whether one exists.
    if (!PARTITION_RE.test(req.params.partition)) throw vaultNotFound();
    return reply
      .type(FHIR_JSON)
      .send(capabilityStatement({ issuer: o.issuer, base: `${o.fhirBase}/${req.params.partition}` }));
  });

  app.get<{ Params: Params }>('/:partition/:type/:id', async (req, reply) => {
    const ctx = await context(req);
    const type = typeOf(req);
    const restrictions = allow(ctx, type, 'read');
    const shape = readSubset(req.query as Record<string, unknown>);
    const v = await read(ctx, type, idOf(req));
    await assertVisible(ctx, v.type, v.id, restrictions);
    const native = wantsNativeBinary(req) ? nativeBinary(req, v) : undefined;
    await auditRead(ctx, 'read', v);
    if (notModified(req.headers, v)) return sendVersion(reply, 304, v, ctx.base);
    if (native) return sendNativeBinary(reply, v, native);
    return sendVersion(reply, 200, v, ctx.base, undefined, shape);
  });

  app.get<{ Params: Params }>('/:partition/:type/:id/_history/:vid', async (req, reply) => {
    const ctx = await context(req);
    const type = typeOf(req);
    const restrictions = allow(ctx, type, 'vread');
    const shape = readSubset(req.query as Record<string, unknown>);
    const v = await vread(ctx, type, idOf(req), req.params.vid as string);
    await assertVisible(ctx, type, v.id, restrictions);
    await assertVersionVisible(ctx, v, restrictions);
    await auditRead(ctx, 'vread', v);
    return sendVersion(reply, notModified(req.headers, v) ? 304 : 200, v, ctx.base, undefined, shape);
  });

  historyRoutes(app, { context, allow, typeOf, idOf });
  resourceOperationRoutes(app, { context, allow, typeOf, idOf });
  systemSearchRoutes(app, { context });
  compartmentSearchRoutes(app, { context, allow, typeOf, idOf });

  const runSearch = async (
    req: FastifyRequest<{ Params: Params }>,
    reply: FastifyReply,
    params: [string, string][],
  ) => {
    const ctx = await context(req);
    const type = typeOf(req);
    const restrictions = allow(ctx, type, 'search-type');
    return reply.type(FHIR_JSON).send(await search(ctx, type, params, { strict: strictHandling(req), restrictions }));
  };
  app.get<{ Params: Params }>('/:partition/:type', (req, reply) => runSearch(req, reply, queryParams(req)));
  app.post<{ Params: Params }>('/:partition/:type/_search', (req, reply) =>
    runSearch(req, reply, [...queryParams(req), ...searchForm(req)]),
  );

  // batch / transaction (http.html#transaction) at the vault base.
  app.post<{ Params: Params }>('/:partition', async (req, reply) => {
    const ctx = await context(req);
    requireResourceBody(req);
    const bundle = parseEntries(req.body, ctx.base);
    const representation = /return=representation/.test(String(req.headers.prefer ?? ''));
    const results =
      bundle.type === 'transaction'
        ? await runTransaction(ctx, bundle.entries, representation)
        : await runBatch(ctx, bundle.entries, representation);
    return reply.type(FHIR_JSON).send(responseBundle(ctx.base, bundle.type, bundle.entries, results));
  });

  const requireResourceBody = (req: FastifyRequest) => {
    const type = bodyMediaType(req.headers['content-type']);
    if (type !== 'json' && type !== 'xml') {
      throw new FhirError(415, 'not-supported', 'send the resource as application/fhir+json or application/fhir+xml');
    }
  };
  /** The resource a create or update sends: FHIR JSON or XML, or a Binary's own bytes (binary.ts). */
  const resourceBody = (req: FastifyRequest, id?: string): Record<string, unknown> => {
    if (req.body instanceof RawBinary) return binaryResource(req, req.body, id);
    requireResourceBody(req);
    return req.body as Record<string, unknown>;
  };

  app.post<{ Params: Params }>('/:partition/:type', async (req, reply) => {
    const ctx = await context(req);
    const type = typeOf(req);
    allow(ctx, type, 'create');
    const body = resourceBody(req);
    const prefer = String(req.headers.prefer ?? '');
    const ifNoneExist = req.headers['if-none-exist'];
    if (typeof ifNoneExist === 'string') {
      // Conditional create (http.html#ccreate) is a one-entry transaction: same matching rules, same checks.
      return conditional(req, reply, ctx, { method: 'POST', type, resource: body, ifNoneExist }, prefer);
    }
    return sendVersion(reply, 201, await create(ctx, type, body), ctx.base, prefer);
  });

  const conditional = async (
    _req: FastifyRequest,
    reply: FastifyReply,
    ctx: FhirContext,
    entry: Omit<EntryRequest, 'index'>,
    prefer: string,
  ) => {
    const [result] = await runTransaction(ctx, [{ ...entry, index: 0 }], true);
    if (!result?.version) return reply.code(result?.status ?? 204).send();
    return sendVersion(reply, result.status, result.version, ctx.base, prefer);
  };

  // Conditional update / delete: PUT or DELETE [type]?[search] (http.html#cond-update, #cdelete).
  app.put<{ Params: Params }>('/:partition/:type', async (req, reply) => {
    const ctx = await context(req);
    const type = typeOf(req);
    const body = resourceBody(req);
    const query = req.raw.url?.split('?')[1];
    if (!query) throw new FhirError(400, 'invalid', 'PUT needs an id (Type/id) or a condition (Type?search)');
    return conditional(
      req,
      reply,
      ctx,
      {
        method: 'PUT',
        type,
        query,
        resource: body,
        ifMatch: ifMatchOf(req),
      },
      String(req.headers.prefer ?? ''),
    );
  });
  app.delete<{ Params: Params }>('/:partition/:type', async (req, reply) => {
    const ctx = await context(req);
    const type = typeOf(req);
    const query = req.raw.url?.split('?')[1];
    if (!query)
      throw new FhirError(
        405,
        'not-supported',
        'deleting a whole type is not supported; give a condition (Type?search)',
      );
    await runTransaction(ctx, [{ index: 0, method: 'DELETE', type, query, ifMatch: ifMatchOf(req) }], false);
    return reply.code(204).send();
  });

  /**
   * A PATCH by id or by condition: the update permission, a JSON Patch or FHIRPath Patch (Parameters) body, then
   * the patch and its answer.
   */
  const patchRoute =
    (
      apply: (
        req: FastifyRequest<{ Params: Params }>,
        ctx: FhirContext,
        type: string,
        doc: PatchDocument,
        ifMatch?: string,
      ) => Promise<StoredVersion>,
    ) =>
    async (req: FastifyRequest<{ Params: Params }>, reply: FastifyReply) => {
      const ctx = await context(req);
      const type = typeOf(req);
      allow(ctx, type, 'update');
      const media = bodyMediaType(req.headers['content-type']);
      if (!media) {
        throw new FhirError(
          415,
          'not-supported',
          'PATCH takes application/json-patch+json, or a FHIRPath Patch Parameters as application/fhir+json or +xml',
        );
      }
      const doc = patchDocument(req.body, media === 'json-patch' ? 'json-patch' : 'fhir');
      const v = await apply(req, ctx, type, doc, ifMatchOf(req));
      return sendVersion(reply, 200, v, ctx.base, String(req.headers.prefer ?? ''));
    };
  // Conditional patch: PATCH [type]?[search] (http.html#patch).
  app.patch<{ Params: Params }>(
    '/:partition/:type',
    patchRoute((req, ctx, type, doc, ifMatch) => {
      const query = req.raw.url?.split('?')[1];
      if (!query) throw new FhirError(400, 'invalid', 'PATCH needs an id (Type/id) or a condition (Type?search)');
      return conditionalPatch(ctx, type, query, doc, ifMatch);
    }),
  );
  app.patch<{ Params: Params }>(
    '/:partition/:type/:id',
    patchRoute((req, ctx, type, doc, ifMatch) => patch(ctx, type, idOf(req), doc, ifMatch)),
  );

  app.put<{ Params: Params }>('/:partition/:type/:id', async (req, reply) => {
    const ctx = await context(req);
    const type = typeOf(req);
    const id = idOf(req);
    allow(ctx, type, 'update');
    const body = resourceBody(req, id);
    // SMART: update-as-create is covered by the update permission.
    const { version, created } = await update(ctx, type, id, body, ifMatchOf(req));
    return sendVersion(reply, created ? 201 : 200, version, ctx.base, String(req.headers.prefer ?? ''));
  });

  app.delete<{ Params: Params }>('/:partition/:type/:id', async (req, reply) => {
    const ctx = await context(req);
    const type = typeOf(req);
    allow(ctx, type, 'delete');
    const ifMatch = ifMatchOf(req);
    await remove(ctx, type, idOf(req), ifMatch === undefined ? undefined : parseEtag(ifMatch));
    return reply.code(204).send();
  });

  // DEQM (seed 002): $submit-data, $data-requirements, $evaluate-measure, $care-gaps.
  measureOperations(app, {
    context,
    allow,
    idOf,
    requireResourceBody,
    submissionPolicy: o.submissionPolicy ?? sameOrganization,
    store: o.store,
    audit: o.audit,
    jobsDir: o.jobsDir,
    log: app.log,
  });
  // Bulk Data export (Bulk Data Access IG 2.0).
  bulkExport(app, { context, allow, store: o.store, audit: o.audit, jobsDir: o.jobsDir, log: app.log });
}
