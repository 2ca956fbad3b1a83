import type { AuditWho } from '../audit/balp.ts';
import type { AuditTrail } from '../audit/trail.ts';
import type { Store } from '../store/types.ts';
import type { VaultAccess } from '../vault/policy.ts';

/** What an interaction needs: the store, the vault it acts in, the caller's access to it, and its audit trail. */
export interface FhirContext {
  store: Store;
  partition: string;
  /** Absolute FHIR base of this vault, e.g. https://localhost:8443/fhir/alice_1234. */
  base: string;
  access: VaultAccess;
  /** Who is acting, as AuditEvents record it. */
  who: AuditWho;
  audit: AuditTrail;
  /** A validated X-Provenance (no target yet): stored with the request's writes. */
  provenance?: Record<string, unknown> | undefined;
  /** The Provenance that was stored, to echo in the X-Provenance response header. */
  provenanceWritten?: string | undefined;
  /** Characters of resource JSON one answer may hold (response-size.ts; DEFAULT_RESPONSE_LIMIT when absent). */
  responseLimit?: number | undefined;
  /** Where a Subscription written here may send notifications (CAREVAULT_SUBSCRIPTION_ENDPOINTS); none when absent. */
  subscriptionEndpoints?: string[] | undefined;
  /** The server's own Subscription dispatcher writes (a status): not checked or recorded as a client's write. */
  subscriptionDispatcher?: boolean | undefined;
}
