import type { TLSSocket } from 'node:tls';

/**
 * Node's HTTP server hands a connection's bytes straight from the socket's handle to its parser, and pauses
 * socket and parser when a request arrives while the previous answer is still being written (backpressure).
 * Over TLS that pause does not hold: the TLS layer passes on everything it has already decrypted, the paused
 * parser fails the request with `HPE_PAUSED` (Node 20 and 24 alike), and a client sending a large POST right
 * after a large answer got a 503 and a closed connection (`bench:fhir`'s ingest met it about once a run).
 *
 * At the connection's first pause a `data` listener is added, and Node unhooks its parser from the handle
 * (`_http_server.js`, generateSocketListenerWrapper): from then on the connection is read through the socket's
 * stream, where a pause buffers what arrives until the answer has drained. Only then: the stream costs 2–4 µs of
 * CPU per request (docs/performance.md), and most connections are never paused. Node unhooks its parser the
 * same way for an upgrade, from within a read.
 */
export function readThroughStreamOncePaused(socket: TLSSocket): void {
  socket.once('pause', () => socket.on('data', ignore));
}

function ignore(): void {}
