import { type AuditWho, EVENT } from '../audit/balp.ts';
import type { AuditTrail } from '../audit/trail.ts';
import type { Store } from '../store/types.ts';
import { type ConsentSelection, revokeConsents } from './users.ts';

/**
 * Withdraws consents (every one of a user, an app's, or one grant) and audits each withdrawal (NEN 7513
 * toestemmingsprofiel = the grant) in the words of whoever withdrew it: an administrator or the user.
 */
export async function withdrawConsents(
  store: Store,
  audit: AuditTrail,
  username: string,
  only: ConsentSelection,
  how: { outcomeDesc: string; who?: Omit<AuditWho, 'clientId' | 'user'> },
) {
  const result = await revokeConsents(store, username, only);
  await audit.record(
    ...result.revoked.map((r) => ({
      type: EVENT.securityAttributesChanged,
      subtype: EVENT.consentWithdrawn,
      action: 'D' as const,
      outcome: '0' as const,
      outcomeDesc: how.outcomeDesc,
      who: { ...how.who, clientId: r.client_id, user: { id: username } },
      clientRole: '110150' as const,
      nen7513: { toestemmingsprofiel: r.grant },
    })),
  );
  return result;
}
