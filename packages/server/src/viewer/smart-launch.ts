import { createHash, randomBytes } from 'node:crypto';
import {
  BSN_SYSTEM,
  FhirClient,
  isValidBsn,
  limitBody,
  limitedFetch,
  type Professional,
  plainOid,
  type Resource,
  SNOMED,
} from '@carevault/sdk';
import { type ClosableFetch, tlsFetch } from '@carevault/sdk/node';
import * as oauth from 'oauth4webapi';
import { LaunchRefused } from '../saml/mapping.ts';
import type { Store } from '../store/types.ts';
import { signingKey } from './settings.ts';
import type { SmartAppRegistration } from './smart-apps.ts';

// What an EHR may answer: its SMART configuration and token are small; a Practitioner or Patient may carry a photo.
const SMALL_ANSWER = 1024 * 1024;
const RESOURCE_ANSWER = 16 * 1024 * 1024;

const PENDING = 'ViewerSmartLaunch';
const digest = (value: string) => createHash('sha256').update(value).digest('base64url');
export const PENDING_TTL = 600;
/** What the viewer reads at the EHR: the practitioner and the patient of the launch. */
export const VIEWER_SCOPE_AT_EHR = 'launch user/Patient.rs user/Practitioner.rs';
const OID_RE = /^[0-2](\.(0|[1-9][0-9]*))+$/;

interface Pending {
  iss: string;
  /** sha256 of the value the starting browser holds in its launch cookie (RFC 9700 §4.7: CSRF). */
  browser: string;
  verifier: string;
  authorizationEndpoint: string;
  tokenEndpoint: string;
  issuer: string;
}

interface Practitioner extends Resource {
  id?: string;
  meta?: { source?: string; extension?: { url?: string; valueUri?: string }[] };
  identifier?: { value?: string }[];
  name?: { text?: string; family?: string; given?: string[] }[];
  qualification?: { code?: { coding?: { system?: string; code?: string }[] } }[];
}
interface PatientLike extends Resource {
  identifier?: { system?: string; value?: string }[];
  name?: { text?: string; family?: string; given?: string[] }[];
  birthDate?: string;
}

const nameOf = (n: { text?: string; family?: string; given?: string[] } | undefined) =>
  n?.text ?? ([...(n?.given ?? []), n?.family].filter(Boolean).join(' ') || undefined);

/**
 * The viewer as a confidential SMART app of an EHR (seq-1-fhir): `/viewer/launch?iss=…&launch=…` starts the
 * authorization code flow with PKCE at the EHR that launched it; the callback exchanges the code, reads
 * `Practitioner/<practitioner>` (role from `qualification` with SNOMED CT, organization from `meta.source`) and
 * `Patient/<patient>` (BSN), and the viewer session starts from those.
 */
export class SmartLaunch {
  private readonly fetches = new Map<string, ClosableFetch>();

  constructor(
    private readonly store: Store,
    private readonly dataDir: string,
    private readonly redirectUri: string,
  ) {}

  private fetchFor(app: SmartAppRegistration): typeof fetch {
    if (!app.ca) return globalThis.fetch.bind(globalThis);
    let f = this.fetches.get(app.ca);
    if (!f) {
      f = tlsFetch({ ca: app.ca });
      this.fetches.set(app.ca, f);
    }
    return f;
  }

  async close(): Promise<void> {
    await Promise.all([...this.fetches.values()].map((f) => f.close()));
  }

  /**
   * The EHR's authorization URL for this launch, and the value the browser keeps in a cookie until the callback:
   * only the browser that started a launch may finish it, so nobody can hand a clinician a callback URL of a
   * launch they started themselves (login CSRF: the clinician would be signed in as someone else, at their patient).
   */
  async start(app: SmartAppRegistration, launch: string): Promise<{ url: string; browser: string }> {
    if (!/^[\w.~-]{1,256}$/.test(launch)) throw new LaunchRefused('the launch parameter is missing or malformed');
    const config = await this.discover(app);
    const verifier = oauth.generateRandomCodeVerifier();
    const state = randomBytes(24).toString('base64url');
    const browser = randomBytes(24).toString('base64url');
    const pending: Pending = { iss: app.ehr, browser: digest(browser), verifier, ...config };
    await this.store.oidc.upsert(PENDING, state, { ...pending }, Math.floor(Date.now() / 1000) + PENDING_TTL, {});
    const url = new URL(config.authorizationEndpoint);
    url.search = new URLSearchParams({
      response_type: 'code',
      client_id: app.clientId,
      redirect_uri: this.redirectUri,
      scope: VIEWER_SCOPE_AT_EHR,
      state,
      aud: app.ehr,
      launch,
      code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    }).toString();
    return { url: url.href, browser };
  }

  /** The callback: the code for a token, then who launched the viewer for which patient. */
  async finish(
    apps: (iss: string) => SmartAppRegistration | undefined,
    callback: URL,
    browser: string | undefined,
  ): Promise<{ professional: Professional; patient: { bsn: string; name?: string; birthDate?: string }; ehr: string }> {
    const state = callback.searchParams.get('state') ?? '';
    if (!/^[\w-]{32}$/.test(state)) throw new LaunchRefused('the callback has no valid state');
    const row = await this.store.oidc.find(PENDING, state);
    await this.store.oidc.destroy(PENDING, state);
    if (!row || (row.expiresAt ?? 0) < Date.now() / 1000)
      throw new LaunchRefused('this launch expired or was already used');
    const pending = row.payload as unknown as Pending;
    if (browser === undefined || digest(browser) !== pending.browser)
      throw new LaunchRefused('this launch was started in another browser; open the viewer from the EHR again');
    const app = apps(pending.iss);
    if (!app) throw new LaunchRefused('the EHR is no longer registered');
    const as: oauth.AuthorizationServer = {
      issuer: pending.issuer,
      authorization_endpoint: pending.authorizationEndpoint,
      token_endpoint: pending.tokenEndpoint,
    };
    const client: oauth.Client = { client_id: app.clientId };
    const fetchImpl = this.fetchFor(app);
    let token: oauth.TokenEndpointResponse;
    try {
      const params = oauth.validateAuthResponse(as, client, callback, state);
      const auth = app.clientSecret
        ? oauth.ClientSecretBasic(app.clientSecret)
        : oauth.PrivateKeyJwt({ key: await signingKey(this.dataDir) });
      const response = await oauth.authorizationCodeGrantRequest(
        as,
        client,
        auth,
        params,
        this.redirectUri,
        pending.verifier,
        { [oauth.customFetch]: limitedFetch(fetchImpl, SMALL_ANSWER) },
      );
      token = await oauth.processAuthorizationCodeResponse(as, client, response);
    } catch (err) {
      const e = err as { error?: string; message?: string };
      throw new LaunchRefused(`the EHR did not issue a token (${e.error ?? e.message ?? 'unknown error'})`);
    }
    const practitionerId = typeof token.practitioner === 'string' ? token.practitioner : undefined;
    const patientId = typeof token.patient === 'string' ? token.patient : undefined;
    if (!practitionerId || !patientId) {
      throw new LaunchRefused('the EHR gave no practitioner and patient with the token');
    }
    const fhir = new FhirClient({
      baseUrl: pending.iss,
      fetch: fetchImpl,
      tokens: { getToken: async () => token.access_token },
      retry: { maxAttempts: 2 },
      maxResponseBytes: RESOURCE_ANSWER,
    });
    let practitioner: Practitioner;
    let patient: PatientLike;
    try {
      [practitioner, patient] = await Promise.all([
        fhir.read<Practitioner>('Practitioner', practitionerId),
        fhir.read<PatientLike>('Patient', patientId),
      ]);
    } catch {
      throw new LaunchRefused('the practitioner or the patient could not be read at the EHR');
    }
    const role = practitioner.qualification
      ?.flatMap((q) => q.code?.coding ?? [])
      .find((c) => c.system === SNOMED && c.code)?.code;
    if (!role || !/^\d{6,18}$/.test(role)) throw new LaunchRefused('the practitioner has no SNOMED CT qualification');
    const source =
      practitioner.meta?.source ?? practitioner.meta?.extension?.find((e) => e.url?.endsWith('source'))?.valueUri;
    const org = plainOid(source ?? '');
    if (!OID_RE.test(org)) throw new LaunchRefused("the practitioner's meta.source names no organization OID");
    const bsn = patient.identifier?.find((i) => i.system === BSN_SYSTEM)?.value;
    if (!bsn || !isValidBsn(bsn)) {
      throw new LaunchRefused('Deze patiënt heeft een ongeldig of nog niet gevalideerd BSN nummer');
    }
    return {
      professional: {
        id: practitioner.identifier?.[0]?.value ?? practitionerId,
        role,
        organizationOid: org,
        name: nameOf(practitioner.name?.[0]),
      },
      patient: { bsn, name: nameOf(patient.name?.[0]), birthDate: patient.birthDate },
      ehr: pending.iss,
    };
  }

  private async discover(app: SmartAppRegistration) {
    const url = `${app.ehr}/.well-known/smart-configuration`;
    try {
      const res = await this.fetchFor(app)(url, {
        headers: { accept: 'application/json' },
        signal: AbortSignal.timeout(10_000),
      });
      const c = (await limitBody(res, SMALL_ANSWER).json()) as Record<string, unknown>;
      if (!res.ok || typeof c.authorization_endpoint !== 'string' || typeof c.token_endpoint !== 'string')
        throw new Error();
      const issuer = typeof c.issuer === 'string' ? c.issuer : new URL(c.token_endpoint).origin;
      return { authorizationEndpoint: c.authorization_endpoint, tokenEndpoint: c.token_endpoint, issuer };
    } catch {
      throw new LaunchRefused('the EHR publishes no usable SMART configuration');
    }
  }
}
