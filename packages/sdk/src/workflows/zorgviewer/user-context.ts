import { SignJWT } from 'jose';
import { ConfigurationError } from '../../errors.js';

/** The logged-in professional a viewer acts for (seed 001, "Gebruiker en Organisatie"). */
export interface Professional {
  /** The id sources log (UZI/AGB/BIG number or the EHR's user id), e.g. `177578`. */
  id: string;
  /** SNOMED CT role code, e.g. `62247001` (huisarts) or `309343006` (arts). */
  role: string;
  /** OID of the professional's organization, dotted or as `urn:oid:…`. */
  organizationOid: string;
  name?: string | undefined;
  organizationName?: string | undefined;
}

export const SNOMED = 'http://snomed.info/sct';
const OID_RE = /^[0-2](\.(0|[1-9][0-9]*))+$/;
/** Header-safe values: visible ASCII without separators that would break AORTA-ID. */
const TOKEN_RE = /^[\x21-\x3A\x3C-\x7E]{1,64}$/;

export const plainOid = (oid: string): string => oid.replace(/^urn:oid:/, '');

/** Refuses a professional whose fields could not travel in headers and tokens unchanged. */
export function checkProfessional(p: Professional): Professional {
  if (!TOKEN_RE.test(p.id)) throw new ConfigurationError('user id must be 1-64 visible ASCII characters without ";"');
  if (!/^[A-Za-z0-9.-]{1,32}$/.test(p.role)) throw new ConfigurationError('user role must be a SNOMED CT code');
  if (!OID_RE.test(plainOid(p.organizationOid)))
    throw new ConfigurationError(`user organization "${p.organizationOid}" is not an OID`);
  if (p.name !== undefined && (p.name.length === 0 || p.name.length > 200))
    throw new ConfigurationError('user name must be 1-200 characters');
  return p;
}

/**
 * IUA claims (ITI-71 JWT option) for the client assertion of a source's token request, so the source knows the
 * requesting organization and person (seed 001, "Verkrijgen bronsysteem access token").
 */
export function userContextClaims(p: Professional): Record<string, unknown> {
  return {
    subject_organization_id: `urn:oid:${plainOid(p.organizationOid)}`,
    ...(p.organizationName ? { subject_organization: p.organizationName } : {}),
    subject_role: [{ system: SNOMED, code: p.role }],
    ...(p.name ? { subject_name: p.name } : {}),
    subject_id: p.id,
  };
}

/**
 * `X-ZV-Context`: the three user fields as a JWT signed with the viewer's own (asymmetric) key, whose `kid` the
 * source resolves in the viewer's registered JWKS. The seed's example decodes to HS256; a shared secret would let
 * every source forge contexts for every other, so only asymmetric algorithms are used.
 */
export async function signUserContext(
  p: Professional,
  signer: { key: CryptoKey; kid: string; alg?: string; clientId: string },
  lifetimeSeconds = 300,
): Promise<string> {
  return new SignJWT({
    subject_organization_id: plainOid(p.organizationOid),
    subject_id: p.id,
    subject_role: p.role,
  })
    .setProtectedHeader({ alg: signer.alg ?? 'ES256', kid: signer.kid, typ: 'JWT' })
    .setIssuer(signer.clientId)
    .setIssuedAt()
    .setExpirationTime(`${lifetimeSeconds}s`)
    .sign(signer.key);
}

/** Epic's `AORTA-ID` (seed 001: at most 128 characters); undefined when the values do not fit. */
export function aortaId(requestId: string, correlationId: string, p: Professional): string | undefined {
  const value = `rid:${requestId};cid:${correlationId};usr:${p.id};rol:${p.role};org:${plainOid(p.organizationOid)}`;
  return value.length <= 128 ? value : undefined;
}

/** The user-context headers of one source request (seed 001 "Gebruiker en Organisatie HTTP-Headers"). */
export function userContextHeaders(
  p: Professional,
  context: string,
  ids: { requestId: string; correlationId: string },
  style: 'generic' | 'epic',
): Record<string, string> {
  const headers: Record<string, string> = {
    'x-zv-subject-organization-id': plainOid(p.organizationOid),
    'x-zv-subject-id': p.id,
    'x-zv-subject-role': p.role,
    'x-zv-context': context,
  };
  const aorta = style === 'epic' ? aortaId(ids.requestId, ids.correlationId, p) : undefined;
  if (aorta) headers['aorta-id'] = aorta;
  return headers;
}
