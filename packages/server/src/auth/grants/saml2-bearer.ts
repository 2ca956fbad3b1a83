import type { X509Certificate } from 'node:crypto';
import { SNOMED } from '@carevault/sdk';
import Provider, { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { RegisteredIdp } from '../../saml/idps.ts';
import { LaunchRefused } from '../../saml/mapping.ts';
import { validateSamlResponse } from '../../saml/validate.ts';
import type { Store } from '../../store/types.ts';
import { rememberUserContext } from '../user-context-claims.ts';

type ResourceServerInfo = ConstructorParameters<typeof Provider.prototype.ResourceServer>[1];

export interface Saml2BearerDeps {
  tokenEndpoint: string;
  fhirBase: string;
  store: Store;
  idps: () => RegisteredIdp[];
  /** The engine's resource-server policy for this client (scopes, format, lifetime). */
  resourceServerInfo: (ctx: KoaContextWithOIDC, resource: string) => Promise<ResourceServerInfo>;
  certificate: (ctx: KoaContextWithOIDC) => X509Certificate | undefined;
}

/**
 * RFC 7522: a client exchanges a SAML 2.0 assertion of a registered IdP for an access token. The assertion is
 * checked like a viewer launch (signature with that IdP's certificate, time window with 2 minutes of skew, one-time
 * ID), with the token endpoint as Audience and Recipient (§3), and its attributes map through the same tables
 * (saml/mapping.ts) onto the IUA claims of the token: the professional, their role and organization.
 */
export function saml2BearerGrant(deps: Saml2BearerDeps) {
  return async function saml2Bearer(ctx: KoaContextWithOIDC): Promise<void> {
    const { client } = ctx.oidc;
    if (!client) throw new errors.InvalidClient('client authentication is required');
    const assertion = (ctx.oidc.params as { assertion?: unknown }).assertion;
    if (typeof assertion !== 'string' || !/^[A-Za-z0-9_-]+=*$/.test(assertion)) {
      throw new errors.InvalidRequest('assertion must be a base64url-encoded SAML 2.0 Assertion');
    }
    const xml = Buffer.from(assertion, 'base64url').toString('utf8');
    if (!/^\s*(<\?xml[^>]*\?>\s*)?<(\w+:)?Assertion\b/.test(xml)) {
      throw new errors.CustomOIDCProviderError('invalid_grant', 'the assertion is not a SAML 2.0 Assertion');
    }
    // node-saml validates Responses: an unsigned envelope lets its audience, time and signature checks run on
    // the Assertion itself (whose own signature is then required).
    const envelope = `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" Version="2.0">${xml.replace(/^\s*<\?xml[^>]*\?>/, '')}</samlp:Response>`;
    let context: Awaited<ReturnType<typeof validateSamlResponse>>['context'];
    try {
      ({ context } = await validateSamlResponse(
        Buffer.from(envelope).toString('base64'),
        deps.idps(),
        { entityId: deps.tokenEndpoint, acsUrl: deps.tokenEndpoint },
        deps.store,
      ));
    } catch (err) {
      // The client learns which rule failed (the assertion is its own; nothing here is a secret).
      if (err instanceof LaunchRefused) throw new errors.CustomOIDCProviderError('invalid_grant', err.message);
      throw err;
    }
    rememberUserContext(ctx.req, {
      subject_id: context.practitioner.id,
      ...(context.practitioner.name ? { subject_name: context.practitioner.name } : {}),
      subject_role: [{ system: SNOMED, code: context.practitioner.role }],
      subject_organization_id: `urn:oid:${context.organizationOid}`,
    });
    const info = await deps.resourceServerInfo(ctx, deps.fhirBase);
    const token = new ctx.oidc.provider.ClientCredentials({ client, scope: info.scope });
    token.resourceServer = new ctx.oidc.provider.ResourceServer(deps.fhirBase, info);
    if (client.tlsClientCertificateBoundAccessTokens) {
      const cert = deps.certificate(ctx);
      if (!cert) throw new errors.InvalidGrant('mutual TLS client certificate not provided');
      token.setThumbprint('x5t', cert as unknown as string);
    }
    ctx.oidc.entity('ClientCredentials', token);
    const value = await token.save();
    ctx.body = {
      access_token: value,
      expires_in: token.expiration,
      token_type: token.tokenType,
      scope: token.scope,
    };
  };
}
