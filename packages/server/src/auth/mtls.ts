import { createHash, X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { LRUCache } from 'lru-cache';
import type { TrustedProxies } from '../http/trusted-proxies.ts';

/**
 * Where the client certificate of a request comes from: the TLS socket, or (only when configured, and only on a
 * connection from a trusted proxy) a header set by a TLS-terminating proxy, which must then have been issued by our CA.
 */
export interface CertificateSource {
  certificate(req: {
    socket: unknown;
    headers: Record<string, string | string[] | undefined>;
  }): X509Certificate | undefined;
  authorized(req: { socket: unknown; headers: Record<string, string | string[] | undefined> }): boolean;
}

export function certificateSource(
  caPem: string,
  forwarded: { header: string; proxies: TrustedProxies } | undefined,
): CertificateSource {
  const ca = new X509Certificate(caPem);
  const parsed = new LRUCache<string, { cert: X509Certificate; trusted: boolean } | false>({ max: 1000 });
  // A connection's peer certificate is fixed once its handshake is done (the server refuses renegotiation:
  // http/app.ts), and parsing it again on every request of a keep-alive connection was ≈ 3 % of a token.
  const bySocket = new WeakMap<object, X509Certificate | null>();

  // The header is the proxy's word only on a connection from the proxy; on any other it is the client's own, and
  // the connection's own certificate counts. Undefined: not from a trusted proxy.
  const proxyHeader = (req: { socket: unknown }): string | undefined =>
    forwarded?.proxies.has((req.socket as { remoteAddress?: string }).remoteAddress) ? forwarded.header : undefined;

  function fromHeader(value: string | string[] | undefined) {
    if (typeof value !== 'string' || value.length === 0 || value.length > 16_384) return undefined;
    const hit = parsed.get(value);
    if (hit !== undefined) return hit || undefined;
    let entry: { cert: X509Certificate; trusted: boolean } | false = false;
    try {
      const cert = new X509Certificate(decodeURIComponent(value));
      const now = Date.now();
      const trusted =
        cert.checkIssued(ca) &&
        cert.verify(ca.publicKey) &&
        Date.parse(cert.validFrom) <= now &&
        now < Date.parse(cert.validTo);
      entry = { cert, trusted };
    } catch {
      entry = false;
    }
    parsed.set(value, entry);
    return entry || undefined;
  }

  return {
    certificate(req) {
      const header = proxyHeader(req);
      if (header !== undefined) return fromHeader(req.headers[header])?.cert;
      const socket = req.socket as Partial<TLSSocket> & object;
      let cert = bySocket.get(socket);
      if (cert === undefined) {
        cert = socket.getPeerX509Certificate?.() ?? null;
        bySocket.set(socket, cert);
      }
      return cert ?? undefined;
    },
    authorized(req) {
      const header = proxyHeader(req);
      if (header !== undefined) return fromHeader(req.headers[header])?.trusted ?? false;
      return (req.socket as Partial<TLSSocket>).authorized === true;
    },
  };
}

/** RFC 4514-style string of a certificate subject, most specific RDN first ("CN=a,O=b"). */
export function subjectDn(cert: X509Certificate): string {
  return cert.subject
    .split('\n')
    .filter((line) => line.length > 0)
    .reverse()
    .join(',');
}

function normalizeDn(dn: string): string {
  return dn
    .split(/(?<!\\),/)
    .map((rdn) => {
      const i = rdn.indexOf('=');
      return `${rdn.slice(0, i).trim().toUpperCase()}=${rdn.slice(i + 1).trim()}`;
    })
    .join(',');
}

function sanValues(cert: X509Certificate, kind: string): string[] {
  return (cert.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((entry) => entry.startsWith(`${kind}:`))
    .map((entry) => entry.slice(kind.length + 1));
}

/** RFC 8705 §2.1.2: the registered subject value must match the certificate's. */
export function subjectMatches(cert: X509Certificate, property: string, expected: string): boolean {
  switch (property) {
    case 'tls_client_auth_subject_dn':
      return normalizeDn(subjectDn(cert)) === normalizeDn(expected);
    case 'tls_client_auth_san_dns':
      return sanValues(cert, 'DNS').includes(expected);
    case 'tls_client_auth_san_uri':
      return sanValues(cert, 'URI').includes(expected);
    case 'tls_client_auth_san_ip':
      return sanValues(cert, 'IP Address').includes(expected);
    case 'tls_client_auth_san_email':
      return sanValues(cert, 'email').includes(expected);
    default:
      return false;
  }
}

/** RFC 8705 §3.1 confirmation value: base64url SHA-256 of the DER certificate. */
export function x5tS256(cert: X509Certificate): string {
  return createHash('sha256').update(cert.raw).digest('base64url');
}
