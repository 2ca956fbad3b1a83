import { SAML } from '@node-saml/node-saml';
import type { Store } from '../store/types.ts';
import type { RegisteredIdp } from './idps.ts';
import { type LaunchContext, LaunchRefused, mapAssertion } from './mapping.ts';

/** At most two minutes of clock difference with an IdP (issue 16). */
export const SKEW_MS = 120_000;

/** The viewer's SAML entity id and ACS URL on this platform. */
export const samlEndpoint = (baseUrl: string): AcsEndpoint => ({
  entityId: `${baseUrl}/viewer/saml`,
  acsUrl: `${baseUrl}/viewer/saml/acs`,
});

export interface AcsEndpoint {
  /** The viewer's SAML entity id: the Audience every assertion must name. */
  entityId: string;
  /** The ACS URL: Recipient (and Destination, when present) must be exactly this. */
  acsUrl: string;
}

export interface ValidatedLaunch {
  idp: RegisteredIdp;
  context: LaunchContext;
  assertionId: string;
}

const first = (x: unknown) => (Array.isArray(x) ? x[0] : x) as Record<string, unknown> | undefined;
const attr = (node: unknown, name: string) => (first(node)?.$ as Record<string, string> | undefined)?.[name];

/**
 * An IdP-initiated SAML Response posted to the ACS: decoded, refused outright when it carries a DTD (XXE, entity
 * expansion), its Issuer picks the registered IdP, and node-saml verifies the signature (of the Response or of
 * the Assertion) with that IdP's certificate, the Audience and the time window. Then Recipient and Destination
 * must name this ACS, and the assertion ID is accepted once across all nodes (the store's replay table).
 */
export async function validateSamlResponse(
  encoded: unknown,
  idps: RegisteredIdp[],
  endpoint: AcsEndpoint,
  store: Store,
): Promise<ValidatedLaunch> {
  if (typeof encoded !== 'string' || encoded.length === 0) throw new LaunchRefused('no SAMLResponse was posted');
  if (encoded.length > 256 * 1024) throw new LaunchRefused('the SAMLResponse is too large');
  const xml = Buffer.from(encoded, 'base64').toString('utf8');
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) throw new LaunchRefused('XML with a DTD or entity declarations is refused');
  const issuer = /<(?:\w+:)?Issuer\b[^>]*>\s*([^<\s][^<]*?)\s*<\/(?:\w+:)?Issuer>/.exec(xml)?.[1];
  const idp = idps.find((i) => i.entityId === issuer);
  if (!idp) throw new LaunchRefused('the assertion is not from a registered identity provider');
  const saml = new SAML({
    idpCert: idp.cert,
    idpIssuer: idp.entityId,
    issuer: endpoint.entityId,
    audience: endpoint.entityId,
    callbackUrl: endpoint.acsUrl,
    acceptedClockSkewMs: SKEW_MS,
    wantAssertionsSigned: false,
    wantAuthnResponseSigned: false,
    validateInResponseTo: 'never' as never,
  });
  let profile: Awaited<ReturnType<SAML['validatePostResponseAsync']>>['profile'];
  try {
    ({ profile } = await saml.validatePostResponseAsync({ SAMLResponse: encoded }));
  } catch (err) {
    throw new LaunchRefused(reason((err as Error).message));
  }
  if (!profile) throw new LaunchRefused('the response holds no assertion');
  const assertion = first((profile.getAssertion?.() as { Assertion?: unknown } | undefined)?.Assertion);
  const assertionId = attr(assertion, 'ID');
  const subject = first(assertion?.Subject);
  const confirmation = first(first(subject?.SubjectConfirmation)?.SubjectConfirmationData);
  const recipient = (confirmation?.$ as Record<string, string> | undefined)?.Recipient;
  if (recipient !== endpoint.acsUrl) throw new LaunchRefused("Recipient is not this viewer's ACS URL");
  const destination = /<(?:\w+:)?Response\b[^>]*\sDestination="([^"]*)"/.exec(xml)?.[1];
  if (destination !== undefined && destination !== endpoint.acsUrl) {
    throw new LaunchRefused("Destination is not this viewer's ACS URL");
  }
  const conditions = first(assertion?.Conditions);
  const notOnOrAfter = Date.parse(attr(conditions, 'NotOnOrAfter') ?? '');
  if (!assertionId || !Number.isFinite(notOnOrAfter))
    throw new LaunchRefused('the assertion has no ID or no NotOnOrAfter');
  const expires = Math.ceil((notOnOrAfter + SKEW_MS) / 1000);
  if (!(await store.oidc.insertIfAbsent('SamlAssertion', `${idp.entityId}|${assertionId}`, expires))) {
    throw new LaunchRefused('this assertion was already used');
  }
  const context = mapAssertion(idp.profile, profile.nameID, (profile.attributes ?? {}) as Record<string, unknown>);
  return { idp, context, assertionId };
}

/** node-saml's message, as the rule it stands for. */
function reason(message: string): string {
  if (/signature/i.test(message)) return 'the signature does not verify with the registered IdP certificate';
  if (/NotBefore|not yet valid/i.test(message)) return 'the assertion is not yet valid';
  if (/expired|NotOnOrAfter/i.test(message)) return 'the assertion has expired';
  if (/audience/i.test(message)) return 'the Audience is not this viewer';
  if (/issuer/i.test(message)) return 'the Issuer is not the registered IdP';
  return 'the SAML response could not be validated';
}
