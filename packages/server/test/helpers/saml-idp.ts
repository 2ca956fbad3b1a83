import { randomUUID, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { SignedXml } from 'xml-crypto';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

/** A test IdP: an RSA key pair and its self-signed certificate (what `viewer idp add --cert` registers). */
export interface TestIdp {
  entityId: string;
  certPem: string;
  keyPem: string;
}

const RSA = {
  name: 'RSASSA-PKCS1-v1_5',
  hash: 'SHA-256',
  publicExponent: new Uint8Array([1, 0, 1]),
  modulusLength: 2048,
};

export async function createIdp(entityId: string): Promise<TestIdp> {
  const keys = (await webcrypto.subtle.generateKey(RSA, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${new URL(entityId).hostname || 'test-idp'}`,
    notBefore: new Date(Date.now() - 86400_000),
    notAfter: new Date(Date.now() + 86400_000),
    signingAlgorithm: RSA,
    keys,
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)?.join('\n')}\n-----END PRIVATE KEY-----\n`;
  return { entityId, certPem: cert.toString('pem'), keyPem };
}

export interface AssertionOptions {
  acsUrl: string;
  audience: string;
  nameId: string;
  /** Attribute name → text value, or `{ xml }` for an element value (VIPLive's HL7v3 Role). */
  attributes: Record<string, string | { xml: string }>;
  /** Seconds relative to now. */
  notBefore?: number;
  notOnOrAfter?: number;
  assertionId?: string;
  recipient?: string;
  destination?: string;
  issuer?: string;
  /** What carries the signature (default: the assertion). */
  sign?: 'assertion' | 'response' | 'none';
  /** Sign with another IdP's key (wrong certificate). */
  signer?: TestIdp;
  /** Put this before the root element after signing (DTD tests). */
  prolog?: string;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const iso = (offsetSeconds: number) => new Date(Date.now() + offsetSeconds * 1000).toISOString();

function assertionXml(idp: TestIdp, o: AssertionOptions, id: string): string {
  const attrs = Object.entries(o.attributes)
    .map(
      ([name, v]) =>
        `<saml:Attribute Name="${esc(name)}"><saml:AttributeValue>${typeof v === 'string' ? esc(v) : v.xml}</saml:AttributeValue></saml:Attribute>`,
    )
    .join('');
  const notBefore = iso(o.notBefore ?? -30);
  const notOnOrAfter = iso(o.notOnOrAfter ?? 300);
  return (
    `<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${id}" Version="2.0" IssueInstant="${iso(0)}">` +
    `<saml:Issuer>${esc(o.issuer ?? idp.entityId)}</saml:Issuer>` +
    `<saml:Subject><saml:NameID>${esc(o.nameId)}</saml:NameID>` +
    `<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="${notOnOrAfter}" Recipient="${esc(o.recipient ?? o.acsUrl)}"/></saml:SubjectConfirmation></saml:Subject>` +
    `<saml:Conditions NotBefore="${notBefore}" NotOnOrAfter="${notOnOrAfter}"><saml:AudienceRestriction><saml:Audience>${esc(o.audience)}</saml:Audience></saml:AudienceRestriction></saml:Conditions>` +
    `<saml:AuthnStatement AuthnInstant="${iso(0)}" SessionIndex="${id}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>` +
    `<saml:AttributeStatement>${attrs}</saml:AttributeStatement></saml:Assertion>`
  );
}

/** Enveloped XML signature (rsa-sha256, exc-c14n) over the Assertion or the Response, after its Issuer. */
function sign(xml: string, target: 'Assertion' | 'Response', signer: TestIdp): string {
  const sig = new SignedXml({
    privateKey: signer.keyPem,
    publicCert: signer.certPem,
    signatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    canonicalizationAlgorithm: 'http://www.w3.org/2001/10/xml-exc-c14n#',
  });
  sig.addReference({
    xpath: `//*[local-name(.)='${target}']`,
    digestAlgorithm: 'http://www.w3.org/2001/04/xmlenc#sha256',
    transforms: ['http://www.w3.org/2000/09/xmldsig#enveloped-signature', 'http://www.w3.org/2001/10/xml-exc-c14n#'],
  });
  sig.computeSignature(xml, {
    location: { reference: `//*[local-name(.)='${target}']/*[local-name(.)='Issuer']`, action: 'after' },
  });
  return sig.getSignedXml();
}

/** A SAML 2.0 Response as an IdP-initiated POST carries it, signed with xml-crypto (base64, for the form). */
export function samlResponse(idp: TestIdp, o: AssertionOptions): string {
  const assertion = assertionXml(idp, o, o.assertionId ?? `_${randomUUID()}`);
  let xml =
    `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_${randomUUID()}" Version="2.0" IssueInstant="${iso(0)}" Destination="${esc(o.destination ?? o.acsUrl)}">` +
    `<saml:Issuer>${esc(o.issuer ?? idp.entityId)}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>${assertion}</samlp:Response>`;
  const target = o.sign ?? 'assertion';
  if (target !== 'none') xml = sign(xml, target === 'assertion' ? 'Assertion' : 'Response', o.signer ?? idp);
  return Buffer.from(`${o.prolog ?? ''}${xml}`).toString('base64');
}

/** A bare signed Assertion, base64url, as the RFC 7522 `assertion` parameter carries it. */
export function samlAssertion(idp: TestIdp, o: AssertionOptions): string {
  const xml = assertionXml(idp, o, o.assertionId ?? `_${randomUUID()}`);
  return Buffer.from(o.sign === 'none' ? xml : sign(xml, 'Assertion', o.signer ?? idp)).toString('base64url');
}

/** VIPLive's role attribute: an HL7v3 Role element. */
export const hl7Role = (code: string, codeSystem = '2.16.840.1.113883.6.96') => ({
  xml: `<Role xmlns="urn:hl7-org:v3" code="${code}" codeSystem="${codeSystem}" codeSystemName="SNOMED_CT" displayName="huisarts"/>`,
});
