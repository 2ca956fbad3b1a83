import type { Coding } from 'fhir/r4.js';
import type { AccessTokenClaims } from '../auth/verifier.ts';
import type { Correlation } from '../http/correlation.ts';
import type { ResourceTransaction, Store } from '../store/types.ts';
import { type AuditWho, auditRecord, type EventInput } from './balp.ts';

export type AuditInput = Omit<EventInput, 'observer'>;

/**
 * Where AuditEvents are written. Events about data go into the data's own transaction (`inTransaction`);
 * everything else is appended on its own, batched with concurrent commits. Appends are awaited: an access
 * whose audit cannot be written fails rather than going unrecorded.
 */
export class AuditTrail {
  constructor(
    private readonly store: Store,
    readonly enabled: boolean,
    readonly observer: string,
    private readonly log: { error(obj: object, msg: string): void },
  ) {}

  async inTransaction(tx: ResourceTransaction, input: AuditInput): Promise<void> {
    if (this.enabled) await tx.audit(auditRecord({ ...input, observer: this.observer }));
  }

  async record(...inputs: AuditInput[]): Promise<void> {
    if (!this.enabled || inputs.length === 0) return;
    await this.store.audit.append(inputs.map((i) => auditRecord({ ...i, observer: this.observer })));
  }

  /** For failure events: a failure to audit a failure is logged, and the original answer still goes out. */
  async bestEffort(input: AuditInput): Promise<void> {
    try {
      await this.record(input);
    } catch (err) {
      this.log.error({ err: { message: (err as Error).message } }, 'could not write an AuditEvent');
    }
  }
}

const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';

function codings(value: unknown): Coding[] | undefined {
  if (!Array.isArray(value)) return undefined;
  const out = value.filter((c): c is Coding => typeof c === 'object' && c !== null && typeof c.code === 'string');
  return out.length ? out.map((c) => ({ system: c.system ?? ACT_REASON, code: c.code })) : undefined;
}

/** Who is acting, from a verified access token and the connection (BALP OAuth agents, L05). */
export function whoFromToken(
  claims: AccessTokenClaims,
  address: string | undefined,
  ids: Correlation | undefined,
): AuditWho {
  const iua = claims.extensions?.ihe_iua ?? {};
  const org = iua.subject_organization_id;
  return {
    clientId: claims.client_id,
    orgOid: typeof org === 'string' ? org.replace(/^urn:oid:/, '') : undefined,
    orgName: typeof iua.subject_organization === 'string' ? iua.subject_organization : undefined,
    roles: codings(iua.subject_role),
    purposeOfUse: codings(iua.purpose_of_use),
    user: claims.extensions?.carevault
      ? { id: String(claims.sub), issuer: claims.iss, fhirUser: claims.fhirUser }
      : assertedUser(iua, claims),
    tokenId: claims.jti,
    address,
    requestId: ids?.requestId,
    correlationId: ids?.correlationId,
  };
}

/**
 * BALP L05: the user a client asserted in its token request (IUA `subject_name`, and `subject_id` as the seed's
 * Epic mapping carries it) — identified by the token's iss/sub unless the client named the user's id.
 */
function assertedUser(iua: Record<string, unknown>, claims: AccessTokenClaims): AuditWho['user'] {
  const name = typeof iua.subject_name === 'string' ? iua.subject_name : undefined;
  const id = typeof iua.subject_id === 'string' ? iua.subject_id : undefined;
  if (!name && !id) return undefined;
  const org = typeof iua.subject_organization_id === 'string' ? iua.subject_organization_id : undefined;
  return id ? { id, issuer: org, display: name } : { id: String(claims.sub), issuer: claims.iss, display: name };
}

/** Who is acting when nothing authenticated them (yet): the address and the request ids. */
export function anonymous(address: string | undefined, ids: Correlation | undefined): AuditWho {
  return { address, requestId: ids?.requestId, correlationId: ids?.correlationId };
}
