import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DirectoryError, oauthUris, pickTokenUri, x5cOf } from '../src/index.ts';

// The consumer side of seed 003 that needs no server: reading the OAuth URIs a CapabilityStatement publishes and
// choosing one. The statement is the excerpt of Cerner's connectathon server the seed quotes.
const CERNER = {
  resourceType: 'CapabilityStatement',
  rest: [
    {
      mode: 'server',
      security: {
        extension: [
          {
            url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
            extension: [
              {
                url: 'token',
                valueUri:
                  'https://authorization.sandboxcerner.com/tenants/0b8a0111-e8e6-4c26-a91c-5069cbc6b1ca/protocols/oauth2/profiles/smart-v1/token',
              },
              {
                url: 'carequality-token',
                valueUri:
                  'https://fhir-ehr.stagingcerner.com/beta/0b8a0111-e8e6-4c26-a91c-5069cbc6b1ca/Authorization/token',
              },
            ],
          },
        ],
      },
    },
  ],
};

describe('token URI from a CapabilityStatement (seed 003)', () => {
  test('carequality-token is preferred over token by default, as Cerner requires', () => {
    assert.equal(Object.keys(oauthUris(CERNER)).length, 2);
    assert.match(pickTokenUri(CERNER), /fhir-ehr\.stagingcerner\.com\/.*\/Authorization\/token$/);
    assert.match(pickTokenUri(CERNER, ['token']), /authorization\.sandboxcerner\.com/);
  });

  test('a statement without the preferred URIs is a DirectoryError naming what it has', () => {
    assert.throws(
      () => pickTokenUri(CERNER, ['udap-token']),
      (err: Error) =>
        err instanceof DirectoryError && /looked for udap-token; it has token, carequality-token/.test(err.message),
    );
    assert.throws(() => pickTokenUri({ resourceType: 'CapabilityStatement' }), /it has none/);
  });

  test('x5c is the PEM chain as base64 DER, leaf first; a non-PEM certificate is refused', () => {
    const pem = (body: string) => `-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----\n`;
    assert.deepEqual(x5cOf(`${pem('QUJD\nREVG')}${pem('R0hJ')}`), ['QUJDREVG', 'R0hJ']);
    assert.throws(() => x5cOf('not a certificate'), /PEM certificate/);
  });
});
