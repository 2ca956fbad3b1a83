import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/** A self-signed client certificate whose validity ended yesterday (for the expired-certificate refusal). */
export async function createSelfSignedExpired(): Promise<string> {
  x509.cryptoProvider.set(webcrypto as unknown as Crypto);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=bestclinic-tcu',
    notBefore: new Date(Date.now() - 30 * 86_400_000),
    notAfter: new Date(Date.now() - 86_400_000),
    keys: keys as CryptoKeyPair,
    signingAlgorithm: alg,
  });
  return cert.toString('pem');
}
