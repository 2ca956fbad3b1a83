import { userInfo } from 'node:os';
import { AuditTrail } from '../audit/trail.ts';
import { parseSmartScope, type SmartScope } from '../auth/smart-scopes.ts';
import type { Config } from '../config/index.ts';
import type { FhirContext } from '../fhir/context.ts';
import type { Store } from '../store/types.ts';

/** The audit trail of an admin command: failures to audit go to stderr. */
export function adminAudit(store: Store, config: Config): AuditTrail {
  return new AuditTrail(store, config.audit, config.baseUrl, {
    error: (_obj: object, msg: string) => {
      process.stderr.write(`error: ${msg}\n`);
    },
  });
}

/**
 * The operator at the console acts with full rights on a vault: nothing goes through a token, and every write
 * is still audited, naming the command and the OS user who ran it.
 */
export function operatorContext(store: Store, config: Config, partition: string, command: string): FhirContext {
  const all = parseSmartScope('system/*.cruds') as SmartScope;
  return {
    store,
    partition,
    base: `${config.baseUrl}/fhir/${partition}`,
    access: { partition, clientId: command, tokenScopes: [all], grantScopes: [all], person: false },
    who: { clientId: command, user: { id: userInfo().username } },
    audit: adminAudit(store, config),
  };
}
