import type { AuditEventEntity } from 'fhir/r4.js';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { correlationOf } from '../http/correlation.ts';
import { clientAddressOf } from '../http/trusted-proxies.ts';
import { type AuditWho, EVENT, type Outcome } from './balp.ts';
import type { AuditInput } from './trail.ts';

/** Request parameters that may appear in an audit record; codes, verifiers, assertions and secrets never do. */
const RECORDABLE = [
  'grant_type',
  'client_id',
  'scope',
  'resource',
  'aud',
  'redirect_uri',
  'requested_token_type',
  'purpose_of_use',
  'token_type_hint',
];

function who(ctx: KoaContextWithOIDC, clientId: string | undefined, userId?: string): AuditWho {
  const ids = correlationOf(ctx.req);
  return {
    clientId,
    user: userId ? { id: userId } : undefined,
    address: clientAddressOf(ctx.req),
    requestId: ids?.requestId,
    correlationId: ids?.correlationId,
  };
}

function outcome(status: number): Outcome {
  return status < 400 ? '0' : status < 500 ? '4' : '8';
}

function recordedRequest(ctx: KoaContextWithOIDC): string {
  const params = (ctx.oidc.params ?? {}) as Record<string, unknown>;
  const kept = new URLSearchParams();
  for (const name of RECORDABLE) {
    const v = params[name];
    if (typeof v === 'string') kept.set(name, v);
  }
  return kept.toString();
}

/** A token as an audited object (BALP Security Resource), named by its jti — never the token itself. */
function tokenEntity(jti: string, description: string): AuditEventEntity {
  return {
    what: { identifier: { value: jti } },
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2' },
    role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '13', display: 'Security Resource' },
    description,
  };
}

const errorOf = (ctx: KoaContextWithOIDC) => {
  const body = ctx.body as { error?: string; error_description?: string } | undefined;
  return body?.error ? `${body.error}${body.error_description ? `: ${body.error_description}` : ''}` : undefined;
};

/** ITI-71 (L07): every token issuance and refusal, with the request (minus secrets) and the token's jti. */
export function tokenEvent(ctx: KoaContextWithOIDC): AuditInput {
  const params = (ctx.oidc.params ?? {}) as { client_id?: string };
  const entities = ctx.oidc.entities as {
    AccessToken?: { jti: string; accountId?: string };
    ClientCredentials?: { jti: string };
  };
  const token = entities.AccessToken ?? entities.ClientCredentials;
  const body = ctx.body as { patient?: string } | undefined;
  return {
    type: EVENT.userAuthentication,
    subtype: EVENT.iti71,
    action: 'E',
    outcome: outcome(ctx.status),
    outcomeDesc: ctx.status >= 400 ? errorOf(ctx) : undefined,
    who: who(ctx, ctx.oidc.client?.clientId ?? params.client_id, entities.AccessToken?.accountId),
    clientRole: '110150',
    patients: ctx.status === 200 && body?.patient ? [`Patient/${body.patient}`] : undefined,
    query: { raw: recordedRequest(ctx), description: 'token request' },
    entities: token ? [tokenEntity(token.jti, 'access token (jti)')] : undefined,
  };
}

/** ITI-102 (L10, our profile): who introspected which token (by jti), never the token itself. */
export function introspectionEvent(ctx: KoaContextWithOIDC): AuditInput {
  const body = ctx.body as { active?: boolean; jti?: string; patient?: string } | undefined;
  return {
    type: EVENT.userAuthentication,
    subtype: EVENT.iti102,
    action: 'E',
    outcome: outcome(ctx.status),
    outcomeDesc: ctx.status >= 400 ? errorOf(ctx) : body?.active ? 'active' : 'inactive',
    who: who(ctx, ctx.oidc.client?.clientId),
    clientRole: '110150',
    patients: body?.active && body.patient ? [`Patient/${body.patient}`] : undefined,
    entities: body?.jti ? [tokenEntity(body.jti, 'introspected token (jti)')] : undefined,
  };
}
