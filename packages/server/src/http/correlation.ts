import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import type { Bindings, ChildLoggerOptions, Logger } from 'pino';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';
/** A caller's id is kept when it is short and plain (it ends up in logs, headers and AuditEvents). */
const ACCEPTED = /^[A-Za-z0-9._:;@/+=-]{1,128}$/;

// Random bytes drawn in blocks: one system call per 340 ids instead of one per id.
let pool = Buffer.alloc(0);
let offset = 0;

/** A 12-character nanoid-style id (64-symbol alphabet, 72 random bits), as the Zorgviewer logging design uses. */
export function newId(): string {
  if (offset + 12 > pool.length) {
    pool = randomBytes(4096);
    offset = 0;
  }
  let id = '';
  for (let i = 0; i < 12; i++) id += ALPHABET[(pool[offset + i] as number) & 63];
  offset += 12;
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
 * J52 / seed 001: accept X-Request-Id and X-Correlation-Id (new ids when absent or unusable) and carry both
 * in the request's log lines. Used as fastify's child-logger factory, so the request logger is made once.
 */
export function correlatedLogger(
  logger: FastifyBaseLogger,
  bindings: Bindings,
  options: ChildLoggerOptions,
  raw: IncomingMessage,
): FastifyBaseLogger {
  const ids: Correlation = {
    requestId: String(bindings.reqId),
    correlationId: accepted(raw.headers['x-correlation-id']) ?? newId(),
  };
  (raw as IncomingMessage & { [KEY]?: Correlation })[KEY] = ids;
  const own = { ...bindings, correlationId: ids.correlationId };
  // A route's own log options are rare; the lazy logger only stands in for a plain child.
  if (Object.keys(options).length > 0) return logger.child(own, options);
  return new RequestLogger(logger as Logger, own);
}

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/**
 * A request's logger that makes its pino child only when a line is written at an enabled level. Making the child
 * (its bindings serialized into JSON) was ≈ 2 % of a read's CPU, for a logger that at level `warn` writes
 * nothing for most requests.
 */
class RequestLogger implements FastifyBaseLogger {
  #child: Logger | undefined;
  constructor(
    private readonly parent: Logger,
    private readonly bindings: Bindings,
  ) {}
  #logger(): Logger {
    this.#child ??= this.parent.child(this.bindings);
    return this.#child;
  }
  #at(level: Level, args: unknown[]): void {
    const current = this.#child ?? this.parent;
    if (!current.isLevelEnabled(level)) return;
    (this.#logger()[level] as (...a: unknown[]) => void)(...args);
  }
  get level(): string {
    return (this.#child ?? this.parent).level;
  }
  set level(level: string) {
    this.#logger().level = level;
  }
  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.#logger().child(bindings, options);
  }
  fatal(...args: unknown[]): void {
    this.#at('fatal', args);
  }
  error(...args: unknown[]): void {
    this.#at('error', args);
  }
  warn(...args: unknown[]): void {
    this.#at('warn', args);
  }
  info(...args: unknown[]): void {
    this.#at('info', args);
  }
  debug(...args: unknown[]): void {
    this.#at('debug', args);
  }
  trace(...args: unknown[]): void {
    this.#at('trace', args);
  }
  silent(): void {}
}

/** Echoes both ids on every response — also the ones the OAuth engine writes. */
export async function correlate(req: FastifyRequest, reply: FastifyReply): Promise<void> {
  const ids = correlationOf(req.raw) ?? { requestId: req.id, correlationId: newId() };
  reply.raw.setHeader('x-request-id', ids.requestId);
  reply.raw.setHeader('x-correlation-id', ids.correlationId);
}
