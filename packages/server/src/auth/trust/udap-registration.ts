import type { Store } from '../../store/types.ts';
import { ClientInputError, type ClientRegistry } from '../clients.ts';
import { isCovered, splitScope } from '../smart-scopes.ts';
import { TrustError } from './chain.ts';
import type { TrustCommunities } from './communities.ts';
import { verifyNetworkJwt } from './network-assertion.ts';
import { saveNetworkClient } from './network-record.ts';

export const REGISTRATION_PATH = '/oauth/register';

export interface RegistrationAnswer {
  status: number;
  body: Record<string, unknown>;
  /** The client registered or updated, for the audit trail. */
  clientId?: string | undefined;
}

const refuse = (error: string, description: string): RegistrationAnswer => ({
  status: 400,
  body: { error, error_description: description },
});

/** Chain problems mean the statement's issuer is not one we approve; anything else is a malformed statement. */
const UNAPPROVED = /trusted community|revoked|expired|not valid before|is a member of community/;

/**
 * UDAP-style dynamic registration (seed 003, the `may_2020` branch; RFC 7591 with a software statement signed
 * under a community CA): a member registers, or updates, itself for its certificate's FQDN — for
 * client_credentials with private_key_jwt, and for the community's scopes or a subset of them.
 */
export async function registerNetworkClient(
  body: unknown,
  deps: { store: Store; clients: ClientRegistry; communities: TrustCommunities; issuer: string },
): Promise<RegistrationAnswer> {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    return refuse('invalid_client_metadata', 'the request body must be a JSON object');
  const request = body as Record<string, unknown>;
  // UDAP says "1"; the seed's may_2020 client sends the number 1.
  if (request.udap !== '1' && request.udap !== 1)
    return refuse('invalid_client_metadata', 'udap must be "1" (UDAP dynamic registration)');
  const statement = request.software_statement;
  if (typeof statement !== 'string' || statement.length > 65_536)
    return refuse('invalid_software_statement', 'software_statement (a signed JWT with an x5c chain) is required');
  let verified: Awaited<ReturnType<typeof verifyNetworkJwt>>;
  try {
    verified = await verifyNetworkJwt(statement, {
      anchors: await deps.communities.anchors(),
      audiences: [`${deps.issuer}${REGISTRATION_PATH}`],
      store: deps.store,
      kind: 'software statement',
      recordedCommunity: async (id) => (await deps.clients.stored(id))?.carevault.community,
    });
  } catch (err) {
    if (!(err instanceof TrustError)) throw err;
    return refuse(
      UNAPPROVED.test(err.message) ? 'unapproved_software_statement' : 'invalid_software_statement',
      err.message,
    );
  }
  const claims = verified.claims;
  const grantTypes = claims.grant_types ?? ['client_credentials'];
  if (!Array.isArray(grantTypes) || grantTypes.length !== 1 || grantTypes[0] !== 'client_credentials')
    return refuse('invalid_client_metadata', 'grant_types must be ["client_credentials"] for a network client');
  const method = claims.token_endpoint_auth_method ?? 'private_key_jwt';
  if (method !== 'private_key_jwt')
    return refuse('invalid_client_metadata', 'token_endpoint_auth_method must be private_key_jwt');
  const name = claims.client_name;
  if (name !== undefined && (typeof name !== 'string' || !/^[^<>\p{Cc}]{1,100}$/u.test(name)))
    return refuse('invalid_client_metadata', 'client_name must be 1-100 printable characters');
  const community = await deps.communities.get(verified.community);
  if (!community) return refuse('unapproved_software_statement', `community "${verified.community}" was just removed`);
  const allowed = splitScope(community.scope);
  if (claims.scope !== undefined && typeof claims.scope !== 'string')
    return refuse('invalid_client_metadata', 'scope must be a space-separated string');
  const asked = splitScope(claims.scope as string | undefined);
  const refused = asked.filter((s) => !isCovered(s, allowed));
  if (refused.length > 0)
    return refuse(
      'invalid_client_metadata',
      `scope ${refused.join(' ')} is beyond what community "${community.name}" allows (${community.scope})`,
    );
  const existed = (await deps.clients.stored(verified.clientId)) !== undefined;
  try {
    await saveNetworkClient(deps.clients, {
      clientId: verified.clientId,
      community: community.name,
      leaf: verified.leaf,
      scopes: asked.length > 0 ? asked : allowed,
      name: name as string | undefined,
      registered: true,
    });
  } catch (err) {
    if (err instanceof ClientInputError) return refuse('invalid_client_metadata', err.message);
    throw err;
  }
  return {
    status: existed ? 200 : 201,
    clientId: verified.clientId,
    body: {
      client_id: verified.clientId,
      software_statement: statement,
      ...(name ? { client_name: name } : {}),
      grant_types: ['client_credentials'],
      token_endpoint_auth_method: 'private_key_jwt',
      scope: (asked.length > 0 ? asked : allowed).join(' '),
    },
  };
}
