import type { FastifyInstance } from 'fastify';
import type { AuditTrail } from '../audit/trail.ts';
import { drainBody } from '../http/request-limits.ts';
import { FHIR_BODY_LIMIT } from './body-parsers.ts';
import { FhirError, operationOutcome, storeErrorAsFhir } from './errors.ts';
import { auditFailure } from './failure-audit.ts';
import { FHIR_JSON } from './format.ts';

/** Every failure under /fhir as an OperationOutcome, audited; a 500 never says more than "internal error". */
export function fhirErrors(app: FastifyInstance, audit: AuditTrail): void {
  app.setErrorHandler(async (thrown, req, reply) => {
    const err = storeErrorAsFhir(thrown);
    await auditFailure(audit, req, err as FhirError | { statusCode?: number; message: string });
    // The reply is returned, not just sent: an async onSend hook (XML) may still be running when this resolves.
    if (err instanceof FhirError) {
      return reply
        .code(err.status)
        .headers(err.headers)
        .type(FHIR_JSON)
        .send(operationOutcome('error', err.code, err.diagnostics, err.expression));
    }
    const e = err as { statusCode?: number; code?: string; message: string };
    if (e.statusCode === 413) await drainBody(req.raw);
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
      const code = e.statusCode === 413 ? 'too-costly' : e.statusCode === 415 ? 'not-supported' : 'structure';
      const diagnostics =
        e.statusCode === 413
          ? `request body exceeds ${FHIR_BODY_LIMIT} bytes${
              req.url.includes('$submit-data') ? '; send large submissions with Prefer: respond-async' : ''
            }`
          : e.code?.startsWith('FST_ERR_CTP')
            ? 'request body is not valid JSON'
            : 'bad request';
      return reply
        .code(e.statusCode)
        .type(FHIR_JSON)
        .send(operationOutcome('error', code, diagnostics));
    }
    req.log.error({ err: { message: e.message, code: e.code } }, 'FHIR request failed');
    return reply
      .code(500)
      .type(FHIR_JSON)
      .send(operationOutcome('fatal', 'exception', 'internal error'));
  });
  app.setNotFoundHandler((_req, reply) => {
    return reply
      .code(404)
      .type(FHIR_JSON)
      .send(operationOutcome('error', 'not-found', 'no such FHIR endpoint'));
  });
}
