import type { ClientPolicy } from './clients.ts';
import { toCoding } from './iua-claims.ts';

/**
 * IUA user-context claims (ITI-71 JWT option, D04) a client may put in its client assertion so that the token
 * names the person and organization it acts for (seed 001: the viewer's professional, for NEN 7513 logging).
 * `subject_id` is the seed's Epic mapping of the user id; IUA has no claim for it.
 */
export const USER_CONTEXT_CLAIMS = [
  'subject_name',
  'subject_id',
  'subject_organization',
  'subject_organization_id',
  'subject_role',
  'purpose_of_use',
] as const;

interface Coding {
  system?: string;
  code: string;
}

export interface AssertedUserContext {
  subject_name?: string;
  subject_id?: string;
  subject_organization?: string;
  /** Always `urn:oid:…`. */
  subject_organization_id?: string;
  subject_role?: Coding[];
  purpose_of_use?: Coding[];
}

export class UserContextError extends Error {}

const OID_RE = /^[0-2](\.(0|[1-9][0-9]*))+$/;
const SNOMED = 'http://snomed.info/sct';
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';

function text(name: string, value: unknown, max: number, pattern?: RegExp): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max || (pattern && !pattern.test(value))) {
    throw new UserContextError(
      `${name} must be a string of 1-${max} characters${pattern ? ` matching ${pattern}` : ''}`,
    );
  }
  return value;
}

/** A code as IUA allows it: a Coding, an array of Codings, or a plain "system|code" / code string. */
function codings(name: string, value: unknown, defaultSystem: string): Coding[] {
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0 || list.length > 10) throw new UserContextError(`${name} must hold 1-10 codes`);
  return list.map((c) => {
    if (typeof c === 'string') return toCoding(text(name, c, 200), defaultSystem);
    if (typeof c === 'object' && c !== null && typeof (c as Coding).code === 'string') {
      const { system, code } = c as Coding;
      if (system !== undefined && typeof system !== 'string')
        throw new UserContextError(`${name}.system must be a URI`);
      return { system: system ?? defaultSystem, code: text(`${name}.code`, code, 200) };
    }
    throw new UserContextError(`${name} must be a Coding, an array of Codings or a "system|code" string`);
  });
}

/**
 * The user context a client asserted, checked against its registration: only clients registered for it may
 * assert one (the claims are refused, never silently dropped), and the organization must be the client's own
 * unless it is registered as an aggregator acting for others.
 */
export function assertedUserContext(
  claims: Record<string, unknown>,
  policy: ClientPolicy | undefined,
): AssertedUserContext | undefined {
  const present = USER_CONTEXT_CLAIMS.filter((k) => claims[k] !== undefined);
  if (present.length === 0) return undefined;
  if (!policy?.userContext) {
    throw new UserContextError(
      `this client is not registered to assert a user context (${present.join(', ')}); register it with --assert-user-context`,
    );
  }
  const out: AssertedUserContext = {};
  if (claims.subject_name !== undefined) out.subject_name = text('subject_name', claims.subject_name, 200);
  if (claims.subject_id !== undefined) out.subject_id = text('subject_id', claims.subject_id, 128, /^[\x21-\x7E]+$/);
  if (claims.subject_organization !== undefined)
    out.subject_organization = text('subject_organization', claims.subject_organization, 200);
  if (claims.subject_organization_id !== undefined) {
    const oid = text('subject_organization_id', claims.subject_organization_id, 140).replace(/^urn:oid:/, '');
    if (!OID_RE.test(oid)) throw new UserContextError('subject_organization_id must be an OID (urn:oid:…)');
    if (policy.userContext !== 'aggregator' && oid !== policy.orgOid) {
      throw new UserContextError(
        `subject_organization_id urn:oid:${oid} is not this client's organization; only an --aggregator client acts for others`,
      );
    }
    out.subject_organization_id = `urn:oid:${oid}`;
  }
  if (claims.subject_role !== undefined) out.subject_role = codings('subject_role', claims.subject_role, SNOMED);
  if (claims.purpose_of_use !== undefined)
    out.purpose_of_use = codings('purpose_of_use', claims.purpose_of_use, ACT_REASON);
  return out;
}

// The engine authenticates the client before it builds the token; the checked context waits on the request.
const pending = new WeakMap<object, AssertedUserContext>();

export function rememberUserContext(request: object, context: AssertedUserContext): void {
  pending.set(request, context);
}

export function userContextOf(request: object): AssertedUserContext | undefined {
  return pending.get(request);
}
