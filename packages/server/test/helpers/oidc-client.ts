import * as client from 'openid-client';
import type { Agent } from 'undici';
import { fetch as undiciFetch } from 'undici';

/** openid-client (a third-party client) configured against the test platform over real HTTPS. */
export async function discover(
  issuer: string,
  clientId: string,
  auth: client.ClientAuth,
  agent: Agent,
  metadata: Partial<client.ClientMetadata> = {},
): Promise<client.Configuration> {
  const customFetch: client.CustomFetch = (url, options) =>
    undiciFetch(url, { ...(options as object), dispatcher: agent }) as unknown as Promise<Response>;
  const config = await client.discovery(new URL(issuer), clientId, metadata, auth, {
    [client.customFetch]: customFetch,
  });
  config[client.customFetch] = customFetch;
  return config;
}

/** An authorization request (code + PKCE S256 + state) of a client; `params` add to or override its fields. */
export async function authorizationRequest(conf: client.Configuration, params: Record<string, string>) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const url = client.buildAuthorizationUrl(conf, {
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    ...params,
  });
  return { url, verifier, state };
}
