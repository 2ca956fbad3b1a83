import { createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ownerOnly, privateDir } from '../config/data-dir.ts';
import { writeSecretFile } from '../config/files.ts';
import { ConfigError } from '../config/index.ts';
import { createCa, type IssuedCertificate, issueLeaf } from './x509.ts';

export interface Pki {
  dir: string;
  caPath: string;
  ca: IssuedCertificate;
  server: IssuedCertificate;
}

const CA_DAYS = 3650;
const LEAF_DAYS = 397;

/**
 * The dev PKI in <data-dir>/pki: a local CA (the trust anchor clients pin), a server certificate for
 * localhost/127.0.0.1 (plus the configured host name), created once and reused on every start.
 * The CA is never replaced behind the operator's back: every client certificate it issued depends on it.
 */
export async function ensureDevPki(
  dataDir: string,
  hostNames: string[],
  note: (message: string) => void = () => {},
): Promise<Pki> {
  const dir = join(dataDir, 'pki');
  privateDir(dir);
  const caPath = join(dir, 'ca.pem');
  const caKeyPath = join(dir, 'ca-key.pem');
  const ca = await loadOrCreateCa(caPath, caKeyPath);
  ownerOnly(caKeyPath);

  const serverPath = join(dir, 'server.pem');
  const serverKeyPath = join(dir, 'server-key.pem');
  const dnsNames = [...new Set(['localhost', ...hostNames.filter((h) => !isIp(h))])];
  const ipAddresses = [...new Set(['127.0.0.1', '::1', ...hostNames.filter(isIp)])];
  let server: IssuedCertificate | undefined;
  if (existsSync(serverPath) && existsSync(serverKeyPath)) {
    server = { certPem: readFileSync(serverPath, 'utf8'), keyPem: readFileSync(serverKeyPath, 'utf8') };
    if (!coversAll(server, ca.certPem, dnsNames, ipAddresses)) server = undefined;
  }
  if (!server) {
    server = await issueLeaf(ca, {
      commonName: 'localhost',
      usage: 'server',
      dnsNames,
      ipAddresses,
      validDays: LEAF_DAYS,
    });
    writeSecretFile(serverKeyPath, server.keyPem);
    writeSecretFile(serverPath, server.certPem, 0o644);
    note(`issued a new server certificate ${serverPath} for ${[...dnsNames, ...ipAddresses].join(', ')}`);
  }
  ownerOnly(serverKeyPath);
  return { dir, caPath, ca, server };
}

async function loadOrCreateCa(caPath: string, caKeyPath: string): Promise<IssuedCertificate> {
  const hasCert = existsSync(caPath);
  const hasKey = existsSync(caKeyPath);
  if (hasCert !== hasKey) {
    const [present, missing] = hasCert ? [caPath, caKeyPath] : [caKeyPath, caPath];
    throw new ConfigError(
      `${present} exists but ${missing} does not: restore ${missing} from a backup ` +
        '(a new CA would invalidate every client certificate issued so far), or move both files away to start a new CA',
    );
  }
  if (hasCert) {
    const ca = { certPem: readFileSync(caPath, 'utf8'), keyPem: readFileSync(caKeyPath, 'utf8') };
    if (!keyMatches(ca)) {
      throw new ConfigError(
        `${caKeyPath} is not the private key of ${caPath}: restore the matching pair from a backup`,
      );
    }
    return ca;
  }
  const ca = await createCa('carevault dev CA', CA_DAYS);
  // Exclusive writes: if another process created the CA meanwhile, fail rather than replace it.
  writeSecretFile(caKeyPath, ca.keyPem, 0o600, true);
  writeSecretFile(caPath, ca.certPem, 0o644, true);
  return ca;
}

function keyMatches(pair: IssuedCertificate): boolean {
  try {
    const fromKey = createPublicKey(pair.keyPem).export({ format: 'der', type: 'spki' });
    const fromCert = new X509Certificate(pair.certPem).publicKey.export({ format: 'der', type: 'spki' });
    return fromKey.equals(fromCert);
  } catch {
    return false;
  }
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

/** A server certificate is reused only while it is valid, issued by this CA, names every host and matches its key. */
function coversAll(server: IssuedCertificate, caPem: string, dnsNames: string[], ips: string[]): boolean {
  if (!keyMatches(server)) return false;
  const cert = new X509Certificate(server.certPem);
  if (!cert.verify(new X509Certificate(caPem).publicKey)) return false;
  if (Date.parse(cert.validTo) < Date.now() + 86_400_000) return false;
  return dnsNames.every((n) => cert.checkHost(n) !== undefined) && ips.every((ip) => cert.checkIP(ip) !== undefined);
}
