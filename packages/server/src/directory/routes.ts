import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuditTrail } from '../audit/trail.ts';
import { parseSmartScope, type SmartScope } from '../auth/smart-scopes.ts';
import { auditRead } from '../fhir/audit.ts';
import type { FhirContext } from '../fhir/context.ts';
import { fhirErrors } from '../fhir/error-handler.ts';
import { FhirError } from '../fhir/errors.ts';
import { FHIR_JSON } from '../fhir/format.ts';
import { read } from '../fhir/interactions/read.ts';
import { search } from '../fhir/interactions/search.ts';
import { ID_RE } from '../fhir/resource-types.ts';
import { negotiate, xmlAnswers } from '../fhir/xml.ts';
import { correlationOf } from '../http/correlation.ts';
import type { Store } from '../store/types.ts';
import { DIRECTORY_VAULT } from './entries.ts';

export interface DirectoryOptions {
  store: Store;
  audit: AuditTrail;
  fhirBase: string;
  baseUrl: string;
  /** Anyone may read the directory (`serve --public-directory`); otherwise it is a vault like any other. */
  public: boolean;
}

const READ_ORGANIZATIONS = parseSmartScope('system/Organization.rs') as SmartScope;

/**
 * `/directory`: the network directory (seed 003) — Organizations with their contained FHIR Endpoint, read and
 * searched without a token when the operator made it public. Every read is audited like any vault read, the
 * caller named by its address. Only Organizations are served: the directory vault holds nothing else to share.
 */
export async function directoryRoutes(app: FastifyInstance, o: DirectoryOptions): Promise<void> {
  fhirErrors(app, o.audit);
  xmlAnswers(app);
  const base = `${o.baseUrl}/directory`;

  app.addHook('onRequest', async (req) => {
    negotiate(req);
    if (!o.public) {
      throw new FhirError(
        401,
        'login',
        `the directory is not public on this server; read ${o.fhirBase}/${DIRECTORY_VAULT} with a token granted on vault "${DIRECTORY_VAULT}"`,
      );
    }
  });

  const context = async (req: FastifyRequest): Promise<FhirContext> => {
    if (!(await o.store.partitions.get(DIRECTORY_VAULT)))
      throw new FhirError(404, 'not-found', 'the directory has no entries yet');
    const ids = correlationOf(req.raw);
    return {
      store: o.store,
      partition: DIRECTORY_VAULT,
      base,
      access: {
        partition: DIRECTORY_VAULT,
        clientId: 'anonymous',
        tokenScopes: [READ_ORGANIZATIONS],
        grantScopes: [READ_ORGANIZATIONS],
        person: false,
      },
      who: { address: req.ip, requestId: ids?.requestId, correlationId: ids?.correlationId },
      audit: o.audit,
    };
  };

  app.get('/metadata', async (_req, reply) =>
    reply.type(FHIR_JSON).send({
      resourceType: 'CapabilityStatement',
      status: 'active',
      date: '2026-12-02',
      kind: 'instance',
      software: { name: 'carevault directory' },
      implementation: { description: 'carevault network directory', url: base },
      fhirVersion: '4.0.1',
      format: ['json', 'xml'],
      rest: [
        {
          mode: 'server',
          resource: [
            {
              type: 'Organization',
              interaction: [{ code: 'read' }, { code: 'search-type' }],
              searchParam: [
                { name: '_id', type: 'token' },
                { name: 'identifier', type: 'token' },
                { name: 'name', type: 'string' },
              ],
            },
          ],
        },
      ],
    }),
  );

  app.get<{ Params: { id: string } }>('/Organization/:id', async (req, reply) => {
    if (!ID_RE.test(req.params.id)) throw new FhirError(404, 'not-found', 'no such Organization');
    const ctx = await context(req);
    const v = await read(ctx, 'Organization', req.params.id);
    await auditRead(ctx, 'read', v);
    return reply.type(FHIR_JSON).header('etag', `W/"${v.version}"`).send(v.content);
  });

  app.get('/Organization', async (req, reply) => {
    const ctx = await context(req);
    const raw = req.raw.url?.split('?')[1] ?? '';
    const params = [...new URLSearchParams(raw)];
    return reply
      .type(FHIR_JSON)
      .send(await search(ctx, 'Organization', params, { strict: false, restrictions: undefined }));
  });
}
