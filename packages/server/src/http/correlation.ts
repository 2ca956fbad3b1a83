import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';
/** A caller's id is kept when it is short and plain (it ends up in logs, headers and AuditEvents). */
const ACCEPTED = /^[A-Za-z0-9._:;@/+=-]{1,128}$/;

/** A 12-character nanoid-style id (64-symbol alphabet, 72 random bits), as the Zorgviewer logging design uses. */
export function newId(): string {
  const bytes = randomBytes(12);
  let id = '';
  for (const b of bytes) id += ALPHABET[b & 63];
  return id;
}

function accepted(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' && ACCEPTED.test(value) ? value : undefined;
}

/** The request's X-Request-Id (the caller's, or a new one): fastify's request id. */
export function requestIdOf(req: IncomingMessage): string {
  return accepted(req.headers['x-request-id']) ?? newId();
}

export interface Correlation {
  requestId: string;
  correlationId: string;
}

const KEY = Symbol.for('carevault.correlation');

/** The ids of a raw request (also reachable from the OAuth engine, which sees only the Node request). */
export function correlationOf(req: IncomingMessage): Correlation | undefined {
  return (req as IncomingMessage & { [KEY]?: Correlation })[KEY];
}

/**
 * J52 / seed 001: accept X-Request-Id and X-Correlation-Id (new ids when absent or unusable), echo both on
 * every response — also the ones the OAuth engine writes — and carry them in the request's log lines.
 */
export async function correlate(req: FastifyRequest, reply: FastifyReply): Promise<void> {
  const ids: Correlation = {
    requestId: req.id,
    correlationId: accepted(req.headers['x-correlation-id']) ?? newId(),
  };
  (req.raw as IncomingMessage & { [KEY]?: Correlation })[KEY] = ids;
  reply.raw.setHeader('x-request-id', ids.requestId);
  reply.raw.setHeader('x-correlation-id', ids.correlationId);
  req.log = req.log.child({ correlationId: ids.correlationId });
}
