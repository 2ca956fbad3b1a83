import type { FhirContext } from '../context.ts';

const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const PARTICIPANT = 'http://terminology.hl7.org/CodeSystem/provenance-participant-type';

/**
 * The Provenance of a submission that came without X-Provenance (seed 002): the agent is the client that
 * held the token, on behalf of its organization (or the reporter), activity CREATE, and the reason the token
 * carries as purpose of use — quality improvement (HQUALIMP) when it carries none. `transact` sets the target.
 */
export function serverProvenance(ctx: FhirContext, reporter: string | undefined): Record<string, unknown> {
  const { who } = ctx;
  const onBehalfOf = who.orgOid
    ? {
        identifier: { system: 'urn:ietf:rfc:3986', value: `urn:oid:${who.orgOid}` },
        ...(who.orgName ? { display: who.orgName } : {}),
      }
    : reporter
      ? { reference: reporter }
      : undefined;
  const agentWho = who.user?.fhirUser
    ? { reference: who.user.fhirUser }
    : {
        identifier: { system: 'urn:ietf:params:oauth:client-id', value: who.clientId ?? 'unknown' },
        display: who.clientId,
      };
  return {
    resourceType: 'Provenance',
    recorded: new Date().toISOString(),
    activity: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-DataOperation', code: 'CREATE', display: 'create' }],
    },
    reason: who.purposeOfUse?.length
      ? [{ coding: who.purposeOfUse }]
      : [{ coding: [{ system: ACT_REASON, code: 'HQUALIMP', display: 'health quality improvement' }] }],
    agent: [
      {
        type: { coding: [{ system: PARTICIPANT, code: 'author', display: 'Author' }] },
        who: agentWho,
        ...(onBehalfOf ? { onBehalfOf } : {}),
      },
    ],
  };
}
