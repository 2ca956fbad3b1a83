import 'reflect-metadata';
import { createPrivateKey, randomUUID, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { SignJWT } from 'jose';
import '../../src/pki/x509.ts';

/**
 * A test trust network (seed 003): a network CA, intermediates and member certificates with SAN = FQDN,
 * including the broken ones the bad-input tests need, and CRLs. Real keys and real X.509 throughout.
 */

const EC: EcKeyGenParams & EcdsaParams = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const RSA: RsaHashedKeyGenParams = {
  name: 'RSASSA-PKCS1-v1_5',
  modulusLength: 2048,
  publicExponent: new Uint8Array([1, 0, 1]),
  hash: 'SHA-256',
};
const DAY = 86_400_000;

export interface Issued {
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
  certPem: string;
  keyPem: string;
  /** Base64 DER, as an x5c entry. */
  b64: string;
  alg: 'ES256' | 'RS256';
}

const serial = () => `01${Buffer.from(webcrypto.getRandomValues(new Uint8Array(15))).toString('hex')}`;

async function wrap(cert: x509.X509Certificate, keys: CryptoKeyPair, alg: 'ES256' | 'RS256'): Promise<Issued> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' });
  return {
    cert,
    keys,
    certPem: cert.toString('pem'),
    keyPem: keyPem as string,
    b64: Buffer.from(cert.rawData).toString('base64'),
    alg,
  };
}

export async function networkCa(name: string, o: { notAfter?: Date } = {}): Promise<Issued> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${name}, O=Test Network`,
    notBefore: new Date(Date.now() - 2 * DAY),
    notAfter: o.notAfter ?? new Date(Date.now() + 365 * DAY),
    signingAlgorithm: EC,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  return wrap(cert, keys, 'ES256');
}

export interface IssueOptions {
  /** dNSName SANs (the FQDN a member is identified by). */
  dns?: string[];
  uri?: string[];
  ca?: boolean;
  usage?: number;
  notBefore?: Date;
  notAfter?: Date;
  rsa?: boolean;
  organization?: string;
}

export async function issue(issuer: Issued, cn: string, o: IssueOptions = {}): Promise<Issued> {
  const algorithm = o.rsa ? RSA : EC;
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
  const names = [
    ...(o.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(o.uri ?? []).map((value) => ({ type: 'url' as const, value })),
  ];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${cn}${o.organization ? `, O=${o.organization}` : ''}`,
    issuer: issuer.cert.subject,
    notBefore: o.notBefore ?? new Date(Date.now() - DAY),
    notAfter: o.notAfter ?? new Date(Date.now() + 90 * DAY),
    signingAlgorithm: issuer.alg === 'RS256' ? RSA : EC,
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(o.ca === true, undefined, true),
      new x509.KeyUsagesExtension(
        o.usage ??
          (o.ca ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign : x509.KeyUsageFlags.digitalSignature),
        true,
      ),
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names, false)] : []),
    ],
  });
  return wrap(cert, keys, o.rsa ? 'RS256' : 'ES256');
}

export async function crl(
  ca: Issued,
  revoked: Issued[],
  o: { nextUpdate?: Date; thisUpdate?: Date } = {},
): Promise<string> {
  const list = await x509.X509CrlGenerator.create({
    issuer: ca.cert.subject,
    thisUpdate: o.thisUpdate ?? new Date(Date.now() - 60_000),
    nextUpdate: o.nextUpdate ?? new Date(Date.now() + 7 * DAY),
    entries: revoked.map((r) => ({ serialNumber: r.cert.serialNumber, revocationDate: new Date(Date.now() - 60_000) })),
    signingAlgorithm: EC,
    signingKey: ca.keys.privateKey,
  });
  return list.toString('pem');
}

export interface AssertionOptions {
  iss?: string;
  sub?: string;
  aud: string;
  jti?: string | null;
  iat?: number | null;
  exp?: number;
  x5c?: unknown;
  kid?: string;
  /** Sign with this key instead of the leaf's. */
  signer?: Issued;
  claims?: Record<string, unknown>;
}

/** A client assertion (or software statement) signed by a member, with its chain in `x5c`. */
export async function networkJwt(member: Issued, chain: Issued[], clientId: string, o: AssertionOptions) {
  const signer = o.signer ?? member;
  const now = Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = {
    iss: o.iss ?? clientId,
    sub: o.sub ?? clientId,
    aud: o.aud,
    exp: o.exp ?? now + 120,
    ...(o.iat === null ? {} : { iat: o.iat ?? now }),
    ...(o.jti === null ? {} : { jti: o.jti ?? randomUUID() }),
    ...o.claims,
  };
  return new SignJWT(payload)
    .setProtectedHeader({
      alg: signer.alg,
      typ: 'JWT',
      x5c: (o.x5c ?? [member.b64, ...chain.map((c) => c.b64)]) as string[],
      ...(o.kid ? { kid: o.kid } : {}),
    })
    .sign(createPrivateKey(signer.keyPem));
}
