import type { IndexRows, SearchFilter, SearchQuery, SearchResult } from '../../store/types.ts';
import { PROXY_PARAM } from '../../vault/compartment.ts';
import { decide, type Restriction, type VaultAccess } from '../../vault/policy.ts';
import { FhirError } from '../errors.ts';
import { RESOURCE_TYPES } from '../resource-types.ts';
import { matchesById, restrictionOf } from './restriction-filter.ts';

/**
 * R4 Binary.securityContext: the resource named there "stands in as a proxy equivalent" when access to the
 * Binary is decided. A Binary scope alone would let an app read the bytes of a document whose metadata it may
 * not read: one of a type it has no scope for, or outside its granular query (`DocumentReference.rs?category=…`).
 * So a Binary is readable only where its proxy would be — by the proxy type's read decision, narrowed as a read
 * of that type is. A Binary without a securityContext, or naming a resource elsewhere (an absolute URL), is
 * decided by the Binary's own scopes alone.
 *
 * The filter every Binary match must also satisfy, or undefined when the token reads every type as it is.
 */
export function binaryProxyFilter(
  access: VaultAccess,
  base: string,
  binaryRestrictions: Restriction[] | undefined,
): SearchFilter | undefined {
  const unreadable: string[] = [];
  const narrowed: SearchFilter[] = [];
  for (const type of RESOURCE_TYPES) {
    if (type === 'Binary') continue;
    const d = decide(access, type, 'read');
    if (!d.allowed) unreadable.push(type);
    else if (d.restrictions && !impliedByBinary(d.restrictions, binaryRestrictions)) {
      const restriction = proxyRestriction(base, type, d.restrictions);
      // A granular query this server cannot parse (400 on that type's own requests) reads none of it here.
      if (!restriction) {
        unreadable.push(type);
        continue;
      }
      // Names a resource of this type → that resource, current, satisfies the type's restrictions.
      narrowed.push({
        kind: 'or',
        filters: [
          { kind: 'not', filter: namesType([type]) },
          {
            kind: 'chain',
            param: PROXY_PARAM,
            targetTypes: [type],
            filter: restriction,
          },
        ],
      });
    }
  }
  const filters: SearchFilter[] = [
    ...(unreadable.length ? [{ kind: 'not', filter: namesType(unreadable) } as const] : []),
    ...narrowed,
  ];
  if (filters.length === 0) return undefined;
  return filters.length === 1 ? filters[0] : { kind: 'and', filters };
}

function proxyRestriction(base: string, type: string, restrictions: Restriction[]): SearchFilter | undefined {
  try {
    return restrictionOf(base, type, restrictions);
  } catch (err) {
    if (err instanceof FhirError) return undefined;
    throw err;
  }
}

/** A Binary's securityContext names a resource of one of `types` (existing or not). */
function namesType(types: string[]): SearchFilter {
  return { kind: 'reference', param: PROXY_PARAM, values: types.map((type) => ({ type })) };
}

/**
 * A Binary restricted to patients' compartments is in one only through its securityContext: it names the
 * patient, or a resource that refers to the patient by its compartment parameters — exactly what the proxy
 * type's compartment restriction asks. When the proxy type is narrowed to (at least) those same patients and
 * by nothing else, the Binary's own restriction already implies the proxy's.
 */
function impliedByBinary(proxy: Restriction[], binary: Restriction[] | undefined): boolean {
  if (!binary?.length || binary.some((r) => r.query !== undefined || r.patient === undefined)) return false;
  const patients = new Set(proxy.filter((r) => r.query === undefined).map((r) => r.patient));
  return binary.every((r) => patients.has(r.patient));
}

/**
 * The same rule for a write: a Binary a token changes or deletes, and one it writes, names in its securityContext
 * a resource the token may read as this transaction sees it — else an app with write scopes for Binary alone
 * would replace or delete a document's bytes it may not read. Undefined when allowed; otherwise why not.
 */
export async function proxyUnreadable(
  access: VaultAccess,
  base: string,
  index: Pick<IndexRows, 'reference'>,
  search: (q: SearchQuery) => Promise<SearchResult>,
): Promise<string | undefined> {
  const r = index.reference.find((x) => x.param === PROXY_PARAM);
  if (!r?.targetType || !r.targetId || r.targetType === 'Binary') return undefined;
  const proxy = `${r.targetType}/${r.targetId}`;
  const d = decide(access, r.targetType, 'read');
  if (!d.allowed) return `its securityContext ${proxy} stands in for it, and ${d.reason}`;
  if (!d.restrictions) return undefined;
  const filter = proxyRestriction(base, r.targetType, d.restrictions);
  if (!filter)
    return `its securityContext ${proxy} stands in for it, and the access token's query for it is not understood`;
  return (await matchesById(search, r.targetType, r.targetId, filter))
    ? undefined
    : `its securityContext ${proxy} stands in for it, and the access token's scopes do not cover that resource`;
}
