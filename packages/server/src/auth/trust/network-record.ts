import type { X509Certificate } from 'node:crypto';
import type { JWK } from 'jose';
import { ClientInputError, type ClientRegistry } from '../clients.ts';
import { x5tS256 } from '../mtls.ts';

/**
 * Creates or refreshes the record of a network client whose certificate chain was just validated: its key is the
 * leaf's, its scopes the community's (or the subset it registered for), its name kept unless a registration
 * renames it. Returns the engine metadata.
 */
export async function saveNetworkClient(
  clients: ClientRegistry,
  input: {
    clientId: string;
    community: string;
    leaf: X509Certificate;
    scopes: string[];
    name?: string | undefined;
    registered?: boolean | undefined;
  },
): Promise<Record<string, unknown>> {
  const previous = await clients.stored(input.clientId);
  if (previous && previous.carevault.community === undefined)
    throw new ClientInputError(`client "${input.clientId}" is registered individually, not through a community`);
  const jwk = input.leaf.publicKey.export({ format: 'jwk' }) as JWK;
  const name = input.name ?? previous?.oidc.client_name;
  const oidc: Record<string, unknown> = {
    client_id: input.clientId,
    token_endpoint_auth_method: 'private_key_jwt',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    jwks: { keys: [{ ...jwk, kid: x5tS256(input.leaf), x5c: [input.leaf.raw.toString('base64')] }] },
    ...(name ? { client_name: name } : {}),
  };
  await clients.saveMetadata(input.clientId, {
    oidc,
    carevault: {
      scopes: input.scopes,
      orgName: input.leaf.subject.match(/^O=(.+)$/m)?.[1],
      tokenFormat: 'jwt',
      tokenAlg: 'ES256',
      community: input.community,
      ...(input.registered ? { registered: true } : {}),
    },
  });
  return oidc;
}
