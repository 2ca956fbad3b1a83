/** RFC 7522 §2.1: the SAML 2.0 bearer assertion grant (registered per client with `--saml-bearer`). */
export const SAML2_BEARER = 'urn:ietf:params:oauth:grant-type:saml2-bearer';
