import { CLIENT_AUTH_ALGS, CLIENT_AUTH_METHODS, OAUTH_ROUTES } from './provider.ts';
import { REGISTRATION_PATH } from './trust/udap-registration.ts';

/** SMART capabilities this server implements (A14; every one of them is exercised by a test). */
const CAPABILITIES = [
  'launch-standalone',
  'launch-ehr',
  'authorize-post',
  'client-public',
  'client-confidential-symmetric',
  'client-confidential-asymmetric',
  'sso-openid-connect',
  'context-standalone-patient',
  'context-ehr-patient',
  'context-ehr-encounter',
  'context-banner',
  'context-style',
  'permission-offline',
  'permission-online',
  'permission-patient',
  'permission-user',
  'permission-v1',
  'permission-v2',
];

/**
 * `{F}/.well-known/smart-configuration` (SMART App Launch 2.2 conformance, A11–A16): the same document
 * under every FHIR base, with absolute URLs of this authorization server.
 */
export function smartConfiguration(issuer: string): Record<string, unknown> {
  const url = (path: string) => `${issuer}${path}`;
  return {
    issuer,
    jwks_uri: url(OAUTH_ROUTES.jwks),
    authorization_endpoint: url(OAUTH_ROUTES.authorization),
    token_endpoint: url(OAUTH_ROUTES.token),
    introspection_endpoint: url(OAUTH_ROUTES.introspection),
    revocation_endpoint: url(OAUTH_ROUTES.revocation),
    // UDAP-style registration for members of trust communities (seed 003).
    registration_endpoint: url(REGISTRATION_PATH),
    grant_types_supported: ['authorization_code', 'client_credentials', 'refresh_token'],
    response_types_supported: ['code'],
    token_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
    token_endpoint_auth_signing_alg_values_supported: CLIENT_AUTH_ALGS,
    scopes_supported: [
      'openid',
      'fhirUser',
      'launch',
      'launch/patient',
      'launch/encounter',
      'offline_access',
      'online_access',
      'patient/*.rs',
      'patient/*.cruds',
      'user/*.rs',
      'user/*.cruds',
      'system/*.rs',
      'system/*.cruds',
      'patient/*.read',
      'user/*.read',
      'system/*.read',
    ],
    code_challenge_methods_supported: ['S256'],
    capabilities: CAPABILITIES,
  };
}

/** The default `smart_style_url` document of EHR launches (SMART styling, C17). */
export const SMART_STYLE = {
  color_background: '#f3f5f8',
  color_error: '#cf222e',
  color_highlight: '#0b5cad',
  color_modal_backdrop: '',
  color_success: '#1a7f37',
  color_text: '#1b1f24',
  dim_border_radius: '8px',
  dim_font_size: '16px',
  dim_spacing_size: '16px',
  font_family_body: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
  font_family_heading: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
};
