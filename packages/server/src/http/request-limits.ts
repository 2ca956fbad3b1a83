import type { Socket } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { type Dialect, dialectOf, errorBody } from './dialect.ts';

/**
 * Node's own parser limit. Headers between MAX_HEADER_BYTES and this are read whole and refused in the
 * endpoint's dialect; past it the parser stops reading, and a client still writing may see a reset.
 */
export const PARSER_MAX_HEADER_BYTES = 256 * 1024;
/** What a request may carry in headers (Node's default limit) and in its URL. */
export const MAX_HEADER_BYTES = 16 * 1024;
export const MAX_URL_LENGTH = 8 * 1024;

function send(reply: FastifyReply, dialect: Dialect, status: number, code: 'too-costly' | 'structure', msg: string) {
  const { contentType, body } = errorBody(dialect, code, msg);
  return reply.code(status).header('connection', 'close').type(contentType).send(body);
}

/** First hook of every request: over-long URLs and headers are refused without echoing any of them. */
export async function requestLimits(req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  if (req.url.length > MAX_URL_LENGTH) {
    return send(reply, dialectOf(req.url), 414, 'too-costly', `the request URL is longer than ${MAX_URL_LENGTH} bytes`);
  }
  let bytes = 0;
  for (const h of req.raw.rawHeaders) bytes += h.length + 2;
  if (bytes > MAX_HEADER_BYTES) {
    return send(reply, dialectOf(req.url), 431, 'too-costly', `request headers exceed ${MAX_HEADER_BYTES} bytes`);
  }
  return undefined;
}

/** fastify's routing errors (a path segment too long, a malformed URL), in the dialect and without the input. */
export function frameworkErrors(err: { code?: string }, req: FastifyRequest, reply: FastifyReply): void {
  const dialect = dialectOf(req.url);
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    void send(reply, dialect, 414, 'too-costly', 'a segment of the request path is too long');
    return;
  }
  void send(reply, dialect, 400, 'structure', 'the request URL is malformed');
}

const REQUEST_LINE = /^[A-Z]{3,7} (\/[^\s?]*)/;

/**
 * Requests the HTTP parser itself rejects (headers beyond PARSER_MAX_HEADER_BYTES, garbage). The answer is
 * written, the socket half-closed and what the client still sends is read and dropped for a moment, so the
 * client gets the status instead of a reset.
 *
 * HPE_PAUSED is not the client's fault: Node pauses a connection whose previous response has not drained when
 * the next request arrives, and over TLS the parser can still be handed the rest of what was already read (a
 * large POST right after a large answer). `tls-request-reads.ts` reads TLS connections through their stream, which
 * prevents that; should it happen anyway, the request was never handled: retry.
 */
export function clientErrorHandler(err: Error & { code?: string; rawPacket?: unknown }, socket: Socket): void {
  // A renegotiation the server refused (http/app.ts) leaves no state in which an answer could be written.
  if (
    err.code === 'ECONNRESET' ||
    err.code === 'ERR_TLS_RENEGOTIATION_DISABLED' ||
    socket.destroyed ||
    !socket.writable
  ) {
    socket.destroy();
    return;
  }
  const head = Buffer.isBuffer(err.rawPacket) ? err.rawPacket.subarray(0, 256).toString('latin1') : '';
  const path = REQUEST_LINE.exec(head)?.[1] ?? '/fhir';
  const [status, reason, code, msg] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? ([431, 'Request Header Fields Too Large', 'too-costly', 'request headers are too large'] as const)
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? ([408, 'Request Timeout', 'structure', 'the request took too long to arrive'] as const)
        : err.code === 'HPE_PAUSED'
          ? ([503, 'Service Unavailable', 'transient', 'the request could not be read; send it again'] as const)
          : ([400, 'Bad Request', 'structure', 'the request is not valid HTTP'] as const);
  const { contentType, body } = errorBody(dialectOf(path), code, msg);
  const text = JSON.stringify(body);
  const retry = status === 503 ? 'Retry-After: 1\r\n' : '';
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: ${contentType}\r\nContent-Length: ${Buffer.byteLength(text)}\r\n${retry}Connection: close\r\n\r\n${text}`,
  );
  // Node's HTTP server still listens for 'data' here and asserts that the connection is not paused: reading on
  // from a paused connection with its listener attached kills the process (ERR_INTERNAL_ASSERTION). The parser
  // must not see another byte of this connection anyway.
  socket.removeAllListeners('data');
  socket.on('data', () => {});
  socket.resume();
  setTimeout(() => socket.destroy(), 2000).unref();
}

/** How much of a refused body is read and dropped so that the client sees the 413 rather than a reset. */
const DRAIN_LIMIT_BYTES = 128 * 1024 * 1024;
const DRAIN_TIMEOUT_MS = 10_000;

/**
 * Reads and drops what is left of a request body (bounded in bytes and time). A 413 sent while the client is
 * still uploading would otherwise be followed by a reset that many clients report instead of the answer.
 */
export function drainBody(raw: FastifyRequest['raw']): Promise<void> {
  if (raw.readableEnded || raw.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    let seen = 0;
    const done = () => {
      clearTimeout(timer);
      raw.off('data', onData);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > DRAIN_LIMIT_BYTES) done();
    };
    const timer = setTimeout(done, DRAIN_TIMEOUT_MS);
    raw.on('data', onData);
    raw.once('end', done);
    raw.once('close', done);
    raw.resume();
  });
}
