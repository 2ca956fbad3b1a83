import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuthServer } from '../auth/index.ts';
import type { CertificateSource } from '../auth/mtls.ts';
import { parseSmartScope, splitScope } from '../auth/smart-scopes.ts';
import { authenticate, insufficientScope } from '../fhir/bearer.ts';
import { FhirError, operationOutcome, storeErrorAsFhir } from '../fhir/errors.ts';
import { assertAcceptsJson, FHIR_JSON } from '../fhir/format.ts';
import { bad, parseDate, splitValues } from '../fhir/search/value-parsers.ts';
import { correlationOf } from '../http/correlation.ts';
import type { AuditQuery, Store } from '../store/types.ts';
import { EVENT } from './balp.ts';
import { type AuditTrail, anonymous, whoFromToken } from './trail.ts';

const PARAMS = new Set([
  'patient',
  'agent',
  'entity',
  'type',
  'subtype',
  'outcome',
  'date',
  'request-id',
  'correlation-id',
  '_count',
  '_offset',
  '_cursor',
  '_total',
  '_format',
]);
const MAX_COUNT = 1000;

/** `Patient/x`, a full URL ending in it, or a bare id → `Patient/x`. */
function reference(value: string, type?: string): string {
  const m = /([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(value);
  if (m) return `${m[1]}/${m[2]}`;
  return type ? `${type}/${value}` : value;
}

/** The ITI-81-style search parameters (patient, date, agent, entity, outcome, type, subtype) as a store query. */
export function parseAuditQuery(params: [string, string][]): AuditQuery {
  const q: AuditQuery = { limit: 100, offset: 0 };
  let offsetGiven = false;
  const add = (key: 'patient' | 'agent' | 'entity' | 'type' | 'subtype' | 'outcome', values: string[]) => {
    // Repeating a parameter ANDs it in FHIR; the store ORs values, so keep only the intersection.
    const prev = q[key];
    q[key] = prev ? prev.filter((v) => values.includes(v)) : values;
    if (q[key]?.length === 0) q[key] = ['\u0000'];
  };
  for (const [name, raw] of params) {
    if (!PARAMS.has(name)) throw bad(`unknown search parameter "${name}" for the audit trail`);
    const values = splitValues(raw).filter((v) => v.length > 0);
    switch (name) {
      case 'patient':
        add(
          'patient',
          values.map((v) => reference(v, 'Patient')),
        );
        break;
      case 'entity':
        add(
          'entity',
          values.map((v) => reference(v)),
        );
        break;
      case 'agent':
        add(
          'agent',
          values.map((v) => v.replace(/^.*\|/, '')),
        );
        break;
      case 'type':
      case 'subtype':
        add(name, values);
        break;
      case 'outcome':
        for (const v of values) if (!/^(0|4|8|12)$/.test(v)) throw bad('outcome is one of 0, 4, 8, 12');
        add('outcome', values);
        break;
      case 'request-id':
        q.requestId = raw;
        break;
      case 'correlation-id':
        q.correlationId = raw;
        break;
      case 'date':
        q.recorded = [...(q.recorded ?? []), parseDate(raw, 'date')];
        break;
      case '_count': {
        const n = Number(raw);
        if (!Number.isInteger(n) || n < 0) throw bad('_count must be a non-negative integer');
        q.limit = Math.min(n, MAX_COUNT);
        break;
      }
      case '_offset': {
        const n = Number(raw);
        if (!Number.isInteger(n) || n < 0) throw bad('_offset must be a non-negative integer');
        q.offset = n;
        offsetGiven = true;
        break;
      }
      case '_cursor':
        // The seq of the last event of the page before: next links page by position, so a page costs the same
        // at any depth of a trail that grows by an event per request, and events appended meanwhile shift nothing.
        if (!/^[1-9][0-9]{0,14}$/.test(raw)) throw bad('_cursor is a position from a next link');
        q.before = Number(raw);
        break;
      case '_total':
        if (!/^(none|estimate|accurate)$/.test(raw)) throw bad('_total is one of none, estimate, accurate');
        q.uncounted = raw === 'none';
        break;
    }
  }
  if (q.before !== undefined && offsetGiven) throw bad('_cursor and _offset cannot be combined');
  // A page by position leaves the total out unless asked for: counting is a pass over every match.
  if (q.before !== undefined && !params.some(([n, v]) => n === '_total' && v !== 'none')) q.uncounted = true;
  return q;
}

/**
 * `/audit/AuditEvent`: the audit trail as a FHIR search (ITI-81 style), for auditors holding a token with
 * the explicit scope `system/AuditEvent.rs` (a wildcard such as `system/*.rs` does not reach the trail).
 * Never writable; reading it is itself audited (NEN 7513: log access is logged).
 */
export async function auditRoutes(
  app: FastifyInstance,
  o: {
    store: Store;
    auth: AuthServer;
    certificates: CertificateSource;
    fhirBase: string;
    issuer: string;
    audit: AuditTrail;
  },
): Promise<void> {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  app.setErrorHandler(async (thrown, req, reply) => {
    const err = storeErrorAsFhir(thrown);
    const e = err as FhirError;
    const status = err instanceof FhirError ? e.status : 500;
    if (status === 401 || status === 403) {
      await o.audit.bestEffort({
        type: EVENT.securityAlert,
        subtype: EVENT.rest_('search-type'),
        action: 'E',
        outcome: '4',
        outcomeDesc: `audit trail access refused: ${e.diagnostics ?? 'error'}`,
        who: anonymous(req.ip, correlationOf(req.raw)),
        clientRole: '110153',
      });
    }
    if (status === 500) req.log.error({ err: { message: (err as Error).message } }, 'audit search failed');
    return reply
      .code(status)
      .headers(err instanceof FhirError ? e.headers : {})
      .type(FHIR_JSON)
      .send(
        operationOutcome(
          'error',
          err instanceof FhirError ? e.code : 'exception',
          err instanceof FhirError ? e.diagnostics : 'internal error',
        ),
      );
  });

  /** An auditor: a technical user's token with an explicit AuditEvent scope granting `permission`. */
  const auditor = async (req: FastifyRequest, permission: 'r' | 's') => {
    const query = req.query as Record<string, unknown>;
    assertAcceptsJson(req.headers.accept, query._format);
    const cert = o.certificates.certificate({ socket: req.raw.socket, headers: req.headers });
    const claims = await authenticate(req, o.auth.verifier, cert, [o.fhirBase]);
    const allowed = splitScope(claims.scope)
      .map(parseSmartScope)
      .some((s) => s?.context === 'system' && s.resourceType === 'AuditEvent' && s.permissions.has(permission));
    if (!allowed || claims.extensions?.carevault)
      throw insufficientScope('reading the audit trail needs the scope system/AuditEvent.rs');
    return claims;
  };

  const search = async (req: FastifyRequest) => {
    const claims = await auditor(req, 's');
    const raw = req.raw.url?.split('?')[1] ?? '';
    const params = [...new URLSearchParams(raw)];
    const q = parseAuditQuery(params);
    // One more than the page: whether there is a next one, without counting.
    const {
      events: found,
      seqs,
      total,
    } = await o.store.audit.search({
      ...q,
      limit: q.limit === 0 ? 0 : q.limit + 1,
    });
    const hasNext = found.length > q.limit;
    const events = found.slice(0, q.limit);
    await o.audit.record({
      type: EVENT.rest,
      subtype: EVENT.rest_('search-type'),
      action: 'E',
      outcome: '0',
      outcomeDesc: 'audit trail read',
      who: whoFromToken(claims, req.ip, correlationOf(req.raw)),
      clientRole: '110153',
      patients: q.patient,
      query: { raw: `AuditEvent?${raw}`, description: 'AuditEvent search' },
    });
    const base = `${o.issuer}/audit/AuditEvent`;
    const kept = new URLSearchParams(params.filter(([n]) => n !== '_offset' && n !== '_count' && n !== '_cursor'));
    kept.set('_count', String(q.limit));
    const at = q.before !== undefined ? `&_cursor=${q.before}` : q.offset ? `&_offset=${q.offset}` : '';
    const links = [{ relation: 'self', url: `${base}?${kept}${at}` }];
    const last = seqs[events.length - 1];
    if (hasNext && last !== undefined) links.push({ relation: 'next', url: `${base}?${kept}&_cursor=${last}` });
    const entries = events.map((content) => {
      const id = (JSON.parse(content) as { id: string }).id;
      return `{"fullUrl":${JSON.stringify(`${base}/${id}`)},"resource":${content},"search":{"mode":"match"}}`;
    });
    return `{"resourceType":"Bundle","type":"searchset"${total !== undefined ? `,"total":${total}` : ''},"link":${JSON.stringify(links)}${entries.length ? `,"entry":[${entries.join(',')}]` : ''}}`;
  };

  app.get('/audit/AuditEvent', async (req, reply) => reply.type(FHIR_JSON).send(await search(req)));
  app.get<{ Params: { id: string } }>('/audit/AuditEvent/:id', async (req, reply) => {
    const claims = await auditor(req, 'r');
    const content = /^[A-Za-z0-9.-]{1,64}$/.test(req.params.id) ? await o.store.audit.get(req.params.id) : undefined;
    await o.audit.record({
      type: EVENT.rest,
      subtype: EVENT.rest_('read'),
      action: 'R',
      outcome: content ? '0' : '4',
      outcomeDesc: 'audit trail read',
      who: whoFromToken(claims, req.ip, correlationOf(req.raw)),
      clientRole: '110152',
      entities: [{ what: { reference: `AuditEvent/${req.params.id}` } }],
    });
    if (!content) throw new FhirError(404, 'not-found', `AuditEvent/${req.params.id} not found`);
    return reply.type(FHIR_JSON).send(content);
  });
  const readOnly = async () => {
    throw new FhirError(405, 'not-supported', 'the audit trail is written by the server only');
  };
  app.post('/audit/AuditEvent', readOnly);
  app.put('/audit/AuditEvent/:id', readOnly);
  app.delete('/audit/AuditEvent/:id', readOnly);
}
