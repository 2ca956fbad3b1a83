import { randomBytes } from 'node:crypto';
import type { Store } from '../store/types.ts';

/**
 * SMART launch context. An EHR creates one before it launches an app (`launch` parameter, B12); the
 * consent step turns it, or the patient the user picked, into the context of the grant, which the token
 * responses (C15–C18) and the tokens themselves carry.
 */
export interface LaunchContext {
  /** Vault the launch happens in. */
  partition: string;
  patient?: string | undefined;
  encounter?: string | undefined;
  /** Relative reference of the user inside the vault (Practitioner/x), for the id_token `fhirUser`. */
  fhirUser?: string | undefined;
  needPatientBanner?: boolean | undefined;
  smartStyleUrl?: string | undefined;
  /** SMART 2.2 fhirContext items beside patient/encounter (e.g. {reference: 'ImagingStudy/1'}). */
  fhirContext?: { reference: string }[] | undefined;
  /** The app the launch is for; another client presenting the value gets nothing. */
  clientId: string;
  /** The EHR host client that created the launch; its grants bound the launched user in the vault. */
  host?: string | undefined;
}

/** What a grant carries beyond scopes: who consented and the context of the launch. */
export interface GrantContext extends Omit<LaunchContext, 'clientId' | 'partition'> {
  username: string;
  /** Vault the token is bound to; absent when the user may use any of their vaults. */
  partition?: string | undefined;
}

const LAUNCH = 'SmartLaunch';
const LAUNCH_USE = 'SmartLaunchUse';
const GRANT = 'SmartGrantContext';
export const LAUNCH_TTL_SECONDS = 300;
const now = () => Math.floor(Date.now() / 1000);

export async function createLaunch(
  store: Store,
  context: LaunchContext,
): Promise<{ launch: string; expiresIn: number }> {
  const launch = randomBytes(24).toString('base64url');
  await store.oidc.upsert(LAUNCH, launch, { ...context }, now() + LAUNCH_TTL_SECONDS, {});
  return { launch, expiresIn: LAUNCH_TTL_SECONDS };
}

/** The launch if it exists, has not expired or been used, and belongs to `clientId` (B13). */
export async function findLaunch(store: Store, launch: string, clientId: string): Promise<LaunchContext | undefined> {
  if (!/^[\w-]{16,64}$/.test(launch)) return undefined;
  const found = await store.oidc.find(LAUNCH, launch);
  if (!found || found.consumed) return undefined;
  const context = found.payload as unknown as LaunchContext;
  return context.clientId === clientId ? context : undefined;
}

/** Marks a launch used, atomically: false when another request used it first. */
export async function claimLaunch(store: Store, launch: string): Promise<boolean> {
  if (!(await store.oidc.insertIfAbsent(LAUNCH_USE, launch, now() + LAUNCH_TTL_SECONDS))) return false;
  await store.oidc.consume(LAUNCH, launch, now());
  return true;
}

export async function saveGrantContext(
  store: Store,
  grantId: string,
  context: GrantContext,
  expiresAt: number,
): Promise<void> {
  // Indexed by grant id, so revoking the grant (code reuse, refresh token reuse) removes it too.
  await store.oidc.upsert(GRANT, grantId, { ...context }, expiresAt, { grantId });
}

export async function grantContext(store: Store, grantId: string | undefined): Promise<GrantContext | undefined> {
  if (!grantId) return undefined;
  return (await store.oidc.find(GRANT, grantId))?.payload as unknown as GrantContext | undefined;
}
