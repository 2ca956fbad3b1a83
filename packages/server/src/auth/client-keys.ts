import { limitedFetch } from '@carevault/sdk';
import { createLocalJWKSet, createRemoteJWKSet, customFetch, type JWTVerifyGetKey } from 'jose';
import { Agent, fetch as undiciFetch } from 'undici';
import type { ClientRegistry } from './clients.ts';

/** Signature algorithms of a client's own key; a shared-secret HS* signature proves nothing about who signed. */
export const ASYMMETRIC_ALGS = [
  'ES256',
  'ES384',
  'ES512',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
] as const;

/** Fetch for what the server fetches itself (client JWKS URLs): bounded in time and size, trusting the given roots. */
export function outboundFetch(ca: string[]): typeof fetch {
  const agent = new Agent({ connect: { ca, timeout: 5_000 }, headersTimeout: 5_000, bodyTimeout: 5_000 });
  const plain = ((url: string | URL, init?: RequestInit) =>
    undiciFetch(url, { ...(init as object), dispatcher: agent })) as unknown as typeof fetch;
  // A key set, a request object, a decision: never more than this, whatever the other side sends.
  return limitedFetch(plain, 1024 * 1024);
}

const TTL_MS = 60_000;

/**
 * The public keys a client registered (inline JWKS or jwks_uri), for signatures the client makes outside the
 * token endpoint (seed 001: X-ZV-Context). Key sets are kept a minute, a remote set follows jose's own caching.
 */
export class ClientKeys {
  private readonly sets = new Map<string, { at: number; source: string; keys: JWTVerifyGetKey }>();
  private readonly fetchImpl: typeof fetch;

  constructor(
    private readonly clients: ClientRegistry,
    outboundCa: string[],
  ) {
    this.fetchImpl = outboundFetch(outboundCa);
  }

  async of(clientId: string): Promise<JWTVerifyGetKey | undefined> {
    const metadata = await this.clients.engineMetadata(clientId);
    const jwks = metadata?.jwks as { keys: object[] } | undefined;
    const uri = typeof metadata?.jwks_uri === 'string' ? metadata.jwks_uri : undefined;
    const source = jwks ? JSON.stringify(jwks) : uri;
    if (!source) return undefined;
    const hit = this.sets.get(clientId);
    if (hit && hit.source === source && Date.now() - hit.at < TTL_MS) return hit.keys;
    const keys = jwks
      ? createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0])
      : createRemoteJWKSet(new URL(uri as string), { [customFetch]: this.fetchImpl, timeoutDuration: 5_000 });
    if (this.sets.size > 10_000) this.sets.clear();
    this.sets.set(clientId, { at: Date.now(), source, keys });
    return keys;
  }
}
