import type { ClientPolicy } from './clients.ts';
import { isCovered, parseSmartScope, splitScope } from './smart-scopes.ts';

/**
 * Scopes of the authorization code flow that are not resource-server scopes: OIDC identity, refresh and
 * SMART launch-context requests. The engine knows them as OIDC scopes (deps.md §1: SMART resource scopes
 * listed there would make consent loop).
 */
export const PERSON_OIDC_SCOPES = [
  'openid',
  'fhirUser',
  'offline_access',
  'online_access',
  'launch',
  'launch/patient',
  'launch/encounter',
] as const;

/**
 * The SMART resource scopes an app acting for a person may receive from a request: patient/ and user/
 * scopes its registration covers. Anything else (system/ scopes, unknown or malformed scopes such as
 * `patient/Observation.dus`) is dropped, as B16/B17 allow.
 */
export function personResourceScopes(requested: string | undefined, policy: ClientPolicy): string[] {
  return splitScope(requested).filter((s) => {
    const parsed = parseSmartScope(s);
    return parsed !== undefined && parsed.context !== 'system' && isCovered(s, policy.scopes);
  });
}

const VERB: Record<string, string> = { c: 'create', r: 'read', u: 'update', d: 'delete', s: 'search' };

/** A scope in plain words for the consent page. */
export function describeScope(scope: string): string {
  switch (scope) {
    case 'openid':
      return 'Know who you are (your user name)';
    case 'fhirUser':
      return 'See which person record belongs to you';
    case 'offline_access':
      return 'Keep access after you close the app, until you withdraw it (long-lived refresh token)';
    case 'online_access':
      return 'Keep access while you are signed in';
    case 'launch':
    case 'launch/patient':
      return 'Know which patient record the app works on';
    case 'launch/encounter':
      return 'Know which visit the app works on';
  }
  const s = parseSmartScope(scope);
  if (!s) return scope;
  const what = s.resourceType === '*' ? 'all kinds of records' : `${s.resourceType} records`;
  const verbs = [...s.permissions].map((p) => VERB[p]).join(', ');
  const whose = s.context === 'patient' ? 'of the selected patient' : 'that you can access';
  const narrowed = s.query ? ` (only ${decodeURIComponent(s.query).replace(/.*[|=]/, '')})` : '';
  return `${verbs[0]?.toUpperCase()}${verbs.slice(1)} ${what}${narrowed} ${whose}`;
}
