import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';

/**
 * The peers whose forwarded headers are believed: X-Forwarded-For (the client's address, for rate limits, the
 * login throttle and AuditEvents) and the configured client-certificate header. A header from any other peer is
 * the client's own word: believing it let anyone who reached a node directly present any certificate it had a
 * copy of (certificates are public), and let anyone pick a fresh address for every password guess.
 */
export interface TrustedProxies {
  /** The entries as configured (addresses and CIDR ranges). */
  readonly entries: readonly string[];
  has(address: string | undefined): boolean;
}

/** What `--trusted-cert-header` alone trusts: a proxy on the same host. */
export const LOOPBACK = ['127.0.0.0/8', '::1/128'];

/** `10.0.0.5, 10.1.0.0/16, fd00::/8` → the matcher; throws on an entry that is neither an address nor a range. */
export function trustedProxies(entries: readonly string[]): TrustedProxies {
  const list = new BlockList();
  for (const entry of entries) {
    const [address = '', prefix, extra] = entry.split('/');
    const family = isIP(address);
    if (family === 0 || extra !== undefined) throw new Error(`"${entry}" is not an IP address or CIDR range`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (prefix === undefined) {
      list.addAddress(address, type);
      continue;
    }
    const bits = /^\d{1,3}$/.test(prefix) ? Number(prefix) : Number.NaN;
    if (!(bits >= 0 && bits <= (family === 4 ? 32 : 128))) throw new Error(`"${entry}" has an invalid prefix length`);
    list.addSubnet(address, bits, type);
  }
  return {
    entries,
    has(address) {
      if (!address) return false;
      // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6 addresses.
      const plain = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
      const family = isIP(plain);
      return family !== 0 && list.check(plain, family === 4 ? 'ipv4' : 'ipv6');
    },
  };
}

const ADDRESS = Symbol.for('carevault.clientAddress');

/** Keeps the client's address as the HTTP layer worked it out, for the OAuth engine (which sees only the request). */
export function rememberClientAddress(req: IncomingMessage, address: string): void {
  (req as IncomingMessage & { [ADDRESS]?: string })[ADDRESS] = address;
}

/** The client's address: behind a trusted proxy the one it forwarded, else the peer's. */
export function clientAddressOf(req: IncomingMessage): string | undefined {
  return (req as IncomingMessage & { [ADDRESS]?: string })[ADDRESS] ?? req.socket.remoteAddress;
}
