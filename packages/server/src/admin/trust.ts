import { existsSync, readFileSync } from 'node:fs';
import { ClientInputError } from '../auth/clients.ts';
import { TrustCommunities } from '../auth/trust/communities.ts';
import { fetchCrl } from '../auth/trust/crl.ts';
import type { Config } from '../config/index.ts';
import { withStore } from './vault.ts';

function readFile(path: string, what: string): Buffer {
  if (!existsSync(path)) throw new ClientInputError(`${what} file not found: ${path}`);
  return readFileSync(path);
}

/** A CRL from a file, or from the network's distribution point (which the server then fetches again, hourly). */
async function readCrl(source: string): Promise<Buffer> {
  return /^https?:\/\//.test(source) ? fetchCrl(source) : readFile(source, '--crl');
}

export const trustAdd = (config: Config, name: string, o: { ca: string; crl?: string; scope?: string }) =>
  withStore(config, async (store) => {
    const caPem = readFile(o.ca, '--ca').toString('utf8');
    const crl = o.crl === undefined ? undefined : await readCrl(o.crl);
    const crlUrl = o.crl !== undefined && /^https?:\/\//.test(o.crl) ? o.crl : undefined;
    return new TrustCommunities(store).add({ name, caPem, crl, crlUrl, scope: o.scope });
  });

export const trustList = (config: Config) => withStore(config, (store) => new TrustCommunities(store).list());

export const trustRemove = (config: Config, name: string) =>
  withStore(config, (store) => new TrustCommunities(store).remove(name));
