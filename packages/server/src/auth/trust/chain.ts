import 'reflect-metadata';
import { X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/** RFC 7515 §4.1.6 leaves the length open; a network chain is leaf, perhaps an intermediate or two, and the CA. */
export const MAX_CHAIN = 5;

/** Why a certificate chain or an assertion made with it is refused; the message names the rule. */
export class TrustError extends Error {}

export const NO_ANCHOR = 'the x5c chain does not lead to the CA of a trusted community';

/** A network CA as the verifier needs it. */
export interface Anchor {
  community: string;
  ca: X509Certificate;
  crl: x509.X509Crl | undefined;
}

export interface ValidatedChain {
  leaf: X509Certificate;
  community: string;
}

function parseX5c(x5c: unknown): X509Certificate[] {
  if (!Array.isArray(x5c) || x5c.length === 0) throw new TrustError('x5c must be a non-empty array of certificates');
  if (x5c.length > MAX_CHAIN)
    throw new TrustError(`x5c holds ${x5c.length} certificates; at most ${MAX_CHAIN} are accepted`);
  return x5c.map((entry, i) => {
    // RFC 7515: standard base64 of the DER, not base64url and not PEM.
    if (typeof entry !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(entry) || entry.length > 16_384)
      throw new TrustError(`x5c[${i}] is not base64 DER`);
    try {
      return new X509Certificate(Buffer.from(entry, 'base64'));
    } catch {
      throw new TrustError(`x5c[${i}] is not an X.509 certificate`);
    }
  });
}

const label = (cert: X509Certificate) => (cert.subject.replace(/\n/g, ', ') || cert.serialNumber).slice(0, 100);

function assertCurrent(cert: X509Certificate, now: number, role: string): void {
  if (now < Date.parse(cert.validFrom))
    throw new TrustError(`${role} certificate "${label(cert)}" is not valid before ${cert.validFrom}`);
  if (now > Date.parse(cert.validTo))
    throw new TrustError(`${role} certificate "${label(cert)}" expired ${cert.validTo}`);
}

function keyUsage(cert: X509Certificate): number | undefined {
  return new x509.X509Certificate(cert.raw).getExtension(x509.KeyUsagesExtension)?.usages;
}

function issuedBy(child: X509Certificate, parent: X509Certificate): boolean {
  return child.checkIssued(parent) && child.verify(parent.publicKey);
}

function assertNotRevoked(cert: X509Certificate, anchor: Anchor): void {
  if (!anchor.crl || !cert.checkIssued(anchor.ca)) return;
  const entry = anchor.crl.findRevoked(new x509.X509Certificate(cert.raw));
  if (entry)
    throw new TrustError(
      `certificate "${label(cert)}" was revoked by community "${anchor.community}" on ${entry.revocationDate.toISOString()}`,
    );
}

/**
 * RFC 5280 path validation for an `x5c` header (the subset a closed network needs): each certificate signed by
 * the next, the last one issued by (or being) a trusted community's CA, every certificate current, intermediates
 * CAs allowed to sign certificates, the leaf an end entity whose key may make signatures, and nothing in the
 * chain on the community's CRL.
 */
export function validateChain(x5c: unknown, anchors: readonly Anchor[], now = Date.now()): ValidatedChain {
  const chain = parseX5c(x5c);
  const leaf = chain[0] as X509Certificate;
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!issuedBy(chain[i] as X509Certificate, chain[i + 1] as X509Certificate))
      throw new TrustError(`x5c[${i}] is not signed by x5c[${i + 1}]`);
  }
  const last = chain[chain.length - 1] as X509Certificate;
  const anchor = anchors.find((a) => last.fingerprint256 === a.ca.fingerprint256 || issuedBy(last, a.ca));
  if (!anchor) throw new TrustError(NO_ANCHOR);
  const path = last.fingerprint256 === anchor.ca.fingerprint256 ? chain : [...chain, anchor.ca];
  if (path.length > MAX_CHAIN + 1) throw new TrustError(`the certificate path is longer than ${MAX_CHAIN}`);
  path.forEach((cert, i) => {
    assertCurrent(cert, now, i === 0 ? 'the leaf' : i === path.length - 1 ? 'the community CA' : 'an intermediate');
  });
  for (const ca of path.slice(1)) {
    const usage = keyUsage(ca);
    if (!ca.ca || (usage !== undefined && (usage & x509.KeyUsageFlags.keyCertSign) === 0))
      throw new TrustError(`certificate "${label(ca)}" is not a CA that may sign certificates`);
  }
  if (leaf.ca) throw new TrustError('the leaf certificate is a CA certificate, not an end entity');
  if (((keyUsage(leaf) ?? 0) & x509.KeyUsageFlags.digitalSignature) === 0)
    throw new TrustError('the leaf certificate does not allow digitalSignature (key usage)');
  for (const cert of path) assertNotRevoked(cert, anchor);
  if (anchor.crl?.nextUpdate && now > anchor.crl.nextUpdate.getTime())
    throw new TrustError(
      `the CRL of community "${anchor.community}" expired ${anchor.crl.nextUpdate.toISOString()}; load a current one with \`carevault trust add --crl\``,
    );
  return { leaf, community: anchor.community };
}

/** dNSName and URI subject alternative names of a certificate. */
export function sanIdentities(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '').split(/,\s*/).flatMap((entry) => {
    const m = /^(DNS|URI):(.+)$/.exec(entry);
    return m ? [(m[2] as string).replace(/^"|"$/g, '')] : [];
  });
}
