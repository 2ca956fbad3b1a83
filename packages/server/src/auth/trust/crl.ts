import type { X509Certificate } from 'node:crypto';
import { limitBody, ResponseTooLargeError } from '@carevault/sdk';
import * as x509 from '@peculiar/x509';
import '../../pki/x509.ts';
import { ClientInputError } from '../clients.ts';

const MAX_CRL_BYTES = 16 * 1024 * 1024;

/** A CRL from its distribution point (DER or PEM over HTTP(S)): at most 16 MiB, within 10 s. */
export async function fetchCrl(url: string): Promise<Buffer> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw new ClientInputError(`could not fetch the CRL from ${url}: ${(err as Error).message}`);
  }
  if (!res.ok) throw new ClientInputError(`fetching the CRL from ${url} answered ${res.status}`);
  try {
    return Buffer.from(await limitBody(res, MAX_CRL_BYTES).arrayBuffer());
  } catch (err) {
    if (err instanceof ResponseTooLargeError) throw new ClientInputError('the CRL is larger than 16 MiB');
    throw new ClientInputError(`could not fetch the CRL from ${url}: ${(err as Error).message}`);
  }
}

/** A CRL (PEM or DER) signed by the community's CA; anything else is refused with the reason. */
export async function verifiedCrl(ca: X509Certificate, data: Buffer | string): Promise<x509.X509Crl> {
  let crl: x509.X509Crl;
  try {
    crl = new x509.X509Crl(typeof data === 'string' ? data : new Uint8Array(data));
  } catch {
    throw new ClientInputError('--crl is not a readable X.509 CRL (PEM or DER)');
  }
  const signed = await crl.verify({ publicKey: new x509.X509Certificate(ca.raw) }).catch(() => false);
  if (!signed) throw new ClientInputError('the CRL is not signed by this community CA');
  return crl;
}
