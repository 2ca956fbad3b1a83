import type { FastifyRequest } from 'fastify';
import { type AuditWho, actionFor, clientRoleFor, EVENT, outcomeFor } from '../audit/balp.ts';
import { type AuditTrail, anonymous } from '../audit/trail.ts';
import { correlationOf } from '../http/correlation.ts';
import { PARTITION_RE } from '../vault/partitions.ts';
import { FhirError, VAULT_NOT_FOUND } from './errors.ts';

type Params = { partition?: string };

/**
 * Every refused or failed request leaves an AuditEvent: Security Alert for 401/403, denied vaults (L09) and
 * refused security context such as a forged X-ZV-Context.
 */
export async function auditFailure(
  audit: AuditTrail,
  req: FastifyRequest,
  err: FhirError | { statusCode?: number; message: string },
): Promise<void> {
  const status = err instanceof FhirError ? err.status : (err.statusCode ?? 500);
  // Throttled requests are not written one by one: a flood must not turn into a flood of audit writes.
  if (status === 429) return;
  const route = req.routeOptions.url ?? '';
  const { partition } = (req.params ?? {}) as Params;
  const who = (req as FastifyRequest & { auditWho?: AuditWho }).auditWho ?? anonymous(req.ip, correlationOf(req.raw));
  const denied =
    status === 401 ||
    status === 403 ||
    (err instanceof FhirError && err.code === 'security') ||
    (err instanceof FhirError && err.code === 'not-found' && err.diagnostics === VAULT_NOT_FOUND);
  const interaction = interactionOfRoute(req.method, route);
  await audit.bestEffort({
    type: denied ? EVENT.securityAlert : EVENT.rest,
    subtype: EVENT.rest_(interaction),
    action: actionFor(interaction),
    outcome: outcomeFor(status),
    outcomeDesc: status >= 500 ? 'internal error' : err instanceof FhirError ? err.diagnostics : err.message,
    who,
    clientRole: clientRoleFor(interaction),
    partition: partition && PARTITION_RE.test(partition) ? partition : undefined,
    query: { raw: `${req.method} ${(req.raw.url ?? '').replace(/^\/fhir/, '')}` },
  });
}

/** The FHIR interaction a route stands for (for AuditEvent subtypes of refused requests). */
function interactionOfRoute(method: string, route: string): string {
  const parts = route
    .replace(/^\/fhir/, '')
    .split('/')
    .filter(Boolean);
  const last = parts[parts.length - 1] ?? '';
  if (method === 'GET' || method === 'HEAD') {
    if (last === ':vid') return 'vread';
    if (last === '_history')
      return parts.length === 2 ? 'history-system' : parts.length === 3 ? 'history-type' : 'history-instance';
    if (last === ':id') return 'read';
    return parts.length <= 1 ? 'search-system' : 'search-type';
  }
  if (method === 'POST') {
    if (last === '_search') return 'search-type';
    if (parts.length === 1) return 'transaction';
    return last.startsWith('$') || parts.some((p) => p.startsWith('$')) ? 'operation' : 'create';
  }
  if (method === 'PUT') return 'update';
  if (method === 'PATCH') return 'patch';
  if (method === 'DELETE') return 'delete';
  return 'operation';
}
