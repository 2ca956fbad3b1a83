import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSecretFile } from '../config/files.ts';
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
 */
export async function ensureDevPki(dataDir: string, hostNames: string[]): Promise<Pki> {
  const dir = join(dataDir, 'pki');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caPath = join(dir, 'ca.pem');
  const caKeyPath = join(dir, 'ca-key.pem');
  let ca: IssuedCertificate;
  if (existsSync(caPath) && existsSync(caKeyPath)) {
    ca = { certPem: readFileSync(caPath, 'utf8'), keyPem: readFileSync(caKeyPath, 'utf8') };
  } else {
    ca = await createCa('carevault dev CA', CA_DAYS);
    writeSecretFile(caKeyPath, ca.keyPem);
    writeSecretFile(caPath, ca.certPem, 0o644);
  }

  const serverPath = join(dir, 'server.pem');
  const serverKeyPath = join(dir, 'server-key.pem');
  const dnsNames = [...new Set(['localhost', ...hostNames.filter((h) => !isIp(h))])];
  const ipAddresses = [...new Set(['127.0.0.1', '::1', ...hostNames.filter(isIp)])];
  let server: IssuedCertificate | undefined;
  if (existsSync(serverPath) && existsSync(serverKeyPath)) {
    server = { certPem: readFileSync(serverPath, 'utf8'), keyPem: readFileSync(serverKeyPath, 'utf8') };
    if (!coversAll(server.certPem, ca.certPem, dnsNames, ipAddresses)) server = undefined;
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
  }
  return { dir, caPath, ca, server };
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

/** A server certificate is reused only while it is valid, issued by this CA and names every host we serve. */
function coversAll(certPem: string, caPem: string, dnsNames: string[], ips: string[]): boolean {
  const cert = new X509Certificate(certPem);
  if (!cert.verify(new X509Certificate(caPem).publicKey)) return false;
  if (Date.parse(cert.validTo) < Date.now() + 86_400_000) return false;
  return dnsNames.every((n) => cert.checkHost(n) !== undefined) && ips.every((ip) => cert.checkIP(ip) !== undefined);
}
