import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Store } from '../store/types.ts';
import { grantContext } from './launch-context.ts';
import { splitScope } from './smart-scopes.ts';

interface GrantEntity {
  jti?: string;
  getOIDCScopeFiltered(scopes: Set<string>): string;
}

/**
 * SMART token response extras (C15–C18, C21): the launch context of the grant, on the code exchange and on
 * every refresh, and the granted OIDC scopes beside the resource scopes (the engine lists only the latter).
 */
export async function addLaunchContext(ctx: KoaContextWithOIDC, store: Store): Promise<void> {
  const body = ctx.body as Record<string, unknown> | undefined;
  const grant = ctx.oidc.entities.Grant as unknown as GrantEntity | undefined;
  if (ctx.status !== 200 || !body || !grant?.jti) return;
  const entities = ctx.oidc.entities as { AuthorizationCode?: { scope?: string }; RefreshToken?: { scope?: string } };
  const params = ctx.oidc.params as { scope?: string };
  const requested = params.scope ?? entities.AuthorizationCode?.scope ?? entities.RefreshToken?.scope;
  const oidc = splitScope(grant.getOIDCScopeFiltered(new Set(splitScope(requested))));
  body.scope = [...oidc, ...splitScope(body.scope as string | undefined)].join(' ');
  const context = await grantContext(store, grant.jti);
  if (!context) return;
  if (context.patient) body.patient = context.patient;
  if (context.encounter) body.encounter = context.encounter;
  // Epic-style launch context (seed 001, seq-1-fhir): the launching practitioner beside the patient.
  const practitioner = /^Practitioner\/([A-Za-z0-9\-.]{1,64})$/.exec(context.fhirUser ?? '')?.[1];
  if (practitioner) body.practitioner = practitioner;
  if (context.needPatientBanner !== undefined) body.need_patient_banner = context.needPatientBanner;
  if (context.smartStyleUrl) body.smart_style_url = context.smartStyleUrl;
  if (context.fhirContext?.length) body.fhirContext = context.fhirContext;
}
