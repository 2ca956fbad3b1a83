import { existsSync, readFileSync } from 'node:fs';
import { limitBody, ResponseTooLargeError } from '@carevault/sdk';
import { ClientInputError } from '../auth/clients.ts';
import { TrustCommunities } from '../auth/trust/communities.ts';
import type { Config } from '../config/index.ts';
import { withStore } from './vault.ts';

function readFile(path: string, what: string): Buffer {
  if (!existsSync(path)) throw new ClientInputError(`${what} file not found: ${path}`);
  return readFileSync(path);
}

/** A CRL from a file, or fetched once from the network's distribution point (refresh by running the command again). */
async function readCrl(source: string): Promise<Buffer> {
  if (!/^https?:\/\//.test(source)) return readFile(source, '--crl');
  let res: Response;
  try {
    res = await fetch(source, { signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw new ClientInputError(`could not fetch the CRL from ${source}: ${(err as Error).message}`);
  }
  if (!res.ok) throw new ClientInputError(`fetching the CRL from ${source} answered ${res.status}`);
  try {
    return Buffer.from(await limitBody(res, 16 * 1024 * 1024).arrayBuffer());
  } catch (err) {
    if (err instanceof ResponseTooLargeError) throw new ClientInputError('the CRL is larger than 16 MiB');
    throw new ClientInputError(`could not fetch the CRL from ${source}: ${(err as Error).message}`);
  }
}

export const trustAdd = (config: Config, name: string, o: { ca: string; crl?: string; scope?: string }) =>
  withStore(config, async (store) => {
    const caPem = readFile(o.ca, '--ca').toString('utf8');
    const crl = o.crl === undefined ? undefined : await readCrl(o.crl);
    return new TrustCommunities(store).add({ name, caPem, crl, scope: o.scope });
  });

export const trustList = (config: Config) => withStore(config, (store) => new TrustCommunities(store).list());

export const trustRemove = (config: Config, name: string) =>
  withStore(config, (store) => new TrustCommunities(store).remove(name));
