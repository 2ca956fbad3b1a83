import type { Store } from '../store/types.ts';
import type { VaultAccess } from '../vault/policy.ts';

/** What an interaction needs: the store, the vault it acts in, and the caller's access to it. */
export interface FhirContext {
  store: Store;
  partition: string;
  /** Absolute FHIR base of this vault, e.g. https://localhost:8443/fhir/alice_1234. */
  base: string;
  access: VaultAccess;
}
