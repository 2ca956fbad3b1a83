import type { FastifyRequest } from 'fastify';
import { decodeProtectedHeader, errors as joseErrors, jwtVerify } from 'jose';
import type { AuditWho } from '../audit/balp.ts';
import { ASYMMETRIC_ALGS, type ClientKeys } from '../auth/client-keys.ts';
import type { ClientRegistry } from '../auth/clients.ts';
import type { AccessTokenClaims } from '../auth/verifier.ts';
import { FhirError } from './errors.ts';

const SNOMED = 'http://snomed.info/sct';
const OID_RE = /^[0-2](\.(0|[1-9][0-9]*))+$/;
const MAX_LIFETIME = 3600;
/** Headers a client may send about its user; recorded as the client's claim unless a signed context backs them. */
const CLAIMED = [
  'x-zv-subject-organization-id',
  'x-zv-subject-id',
  'x-zv-subject-role',
  'x-zv-subject-organization-ura',
  'aorta-id',
];

/** Why an `X-ZV-Context` was refused: 400 for the caller, a Security Alert for the trail. */
export class UserContextRefused extends FhirError {
  constructor(readonly reason: string) {
    super(400, 'security', `X-ZV-Context refused: ${reason}`);
  }
}

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  if (Array.isArray(v)) throw new UserContextRefused(`send ${name} once`);
  return v;
}

/** Headers about the user as sent, visible ASCII only and bounded, to record as claimed. */
function claimed(req: FastifyRequest): [string, string][] {
  const out: [string, string][] = [];
  for (const name of CLAIMED) {
    const v = req.headers[name];
    if (typeof v === 'string' && v.length > 0) out.push([name, v.replace(/[^\x20-\x7E]/g, '?').slice(0, 128)]);
  }
  return out;
}

/**
 * Seed 001 user context on a source request. `X-ZV-Context` is a JWT the calling client signed with one of its
 * registered keys (asymmetric algorithms only); it must agree with the `X-ZV-*` headers and with the user context
 * of the token, and then names the professional (NEN 7513 *gebruiker*) in every AuditEvent of the request.
 * Without it, `X-ZV-*` and `AORTA-ID` are recorded as claimed by the client and decide nothing.
 */
export async function withUserContext(
  req: FastifyRequest,
  claims: AccessTokenClaims,
  who: AuditWho,
  clients: ClientRegistry,
  keys: ClientKeys,
): Promise<AuditWho> {
  const asClaimed = claimed(req);
  const withClaims: AuditWho = asClaimed.length ? { ...who, claimed: asClaimed } : who;
  const context = header(req, 'x-zv-context');
  if (context === undefined) return withClaims;
  const clientId = claims.client_id;
  const policy = clientId ? await clients.policy(clientId) : undefined;
  if (!clientId || !policy?.userContext) {
    throw new UserContextRefused('this client is not registered to assert a user context');
  }
  if (context.length > 4096) throw new UserContextRefused('the context is longer than 4096 characters');
  let alg: unknown;
  try {
    alg = decodeProtectedHeader(context).alg;
  } catch {
    throw new UserContextRefused('not a JWS');
  }
  if (typeof alg !== 'string' || !(ASYMMETRIC_ALGS as readonly string[]).includes(alg)) {
    throw new UserContextRefused(`alg ${String(alg)} is not allowed; sign with the client's registered asymmetric key`);
  }
  const keySet = await keys.of(clientId);
  if (!keySet) throw new UserContextRefused('the client has no registered keys');
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(context, keySet, {
      algorithms: [...ASYMMETRIC_ALGS],
      clockTolerance: 5,
      requiredClaims: ['exp'],
    }));
  } catch (err) {
    const why =
      err instanceof joseErrors.JWTExpired
        ? 'expired'
        : err instanceof joseErrors.JWTClaimValidationFailed
          ? err.message
          : err instanceof joseErrors.JWKSNoMatchingKey
            ? 'no registered key of this client matches its kid'
            : "signature does not verify with the client's registered keys";
    throw new UserContextRefused(why);
  }
  if ((payload.exp as number) - Math.floor(Date.now() / 1000) > MAX_LIFETIME) {
    throw new UserContextRefused(`it must expire within ${MAX_LIFETIME} seconds`);
  }
  if (payload.iss !== undefined && payload.iss !== clientId) {
    throw new UserContextRefused('iss is not the calling client');
  }
  const field = (name: string): string => {
    const v = payload[name];
    if (typeof v !== 'string' || v.length === 0 || v.length > 128 || !/^[\x21-\x7E]+$/.test(v)) {
      throw new UserContextRefused(`${name} is missing or not a plain string`);
    }
    return v;
  };
  const org = field('subject_organization_id').replace(/^urn:oid:/, '');
  const subjectId = field('subject_id');
  const role = field('subject_role');
  if (!OID_RE.test(org)) throw new UserContextRefused('subject_organization_id is not an OID');
  const agree = (name: string, value: string, normalise = (s: string) => s) => {
    const sent = header(req, name);
    if (sent !== undefined && normalise(sent.trim()) !== value) {
      throw new UserContextRefused(`${name} does not match the signed context`);
    }
  };
  agree('x-zv-subject-organization-id', org, (s) => s.replace(/^urn:oid:/, ''));
  agree('x-zv-subject-id', subjectId);
  agree('x-zv-subject-role', role);
  const iua = claims.extensions?.ihe_iua ?? {};
  const tokenOrg = typeof iua.subject_organization_id === 'string' ? iua.subject_organization_id : undefined;
  if (tokenOrg !== undefined && tokenOrg.replace(/^urn:oid:/, '') !== org) {
    throw new UserContextRefused("subject_organization_id differs from the token's");
  }
  if (typeof iua.subject_id === 'string' && iua.subject_id !== subjectId) {
    throw new UserContextRefused("subject_id differs from the token's");
  }
  const tokenRoles = Array.isArray(iua.subject_role) ? (iua.subject_role as { code?: unknown }[]) : undefined;
  if (tokenRoles?.length && !tokenRoles.some((r) => r?.code === role)) {
    throw new UserContextRefused("subject_role differs from the token's");
  }
  if (policy.userContext === 'self' && org !== policy.orgOid) {
    throw new UserContextRefused("subject_organization_id is not the client's organization");
  }
  const sameOrg = who.orgOid === org;
  return {
    ...withClaims,
    user: {
      id: subjectId,
      issuer: `urn:oid:${org}`,
      display: typeof iua.subject_name === 'string' ? iua.subject_name : undefined,
    },
    roles: [{ system: SNOMED, code: role }],
    orgOid: org,
    orgName: sameOrg ? who.orgName : undefined,
    userContext: 'verified',
  };
}
