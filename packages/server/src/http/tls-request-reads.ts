import type { TLSSocket } from 'node:tls';

/**
 * Node's HTTP server hands a connection's bytes straight from the socket's handle to its parser, and pauses
 * socket and parser when a request arrives while the previous answer is still being written (backpressure).
 * Over TLS that pause does not hold: the TLS layer passes on everything it has already decrypted, the paused
 * parser fails the request with `HPE_PAUSED` (Node 20 and 24 alike), and a client sending a large POST right
 * after a large answer got a 503 and a closed connection (`bench:fhir`'s ingest met it about once a run).
 *
 * A `data` listener on the socket makes Node unhook its parser from the handle (`_http_server.js`,
 * generateSocketListenerWrapper): the connection is read through the socket's stream, where a pause buffers what
 * arrives until the answer has drained. It costs 2–4 µs of CPU per request (docs/performance.md). Added as the
 * connection is set up: unhooking the parser only at the first pause, from within a read, reset connections
 * whose request body was being held back (tried).
 */
export function readRequestsThroughStream(socket: TLSSocket): void {
  socket.on('data', ignore);
}

function ignore(): void {}
