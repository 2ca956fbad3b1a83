import type { SearchFilter } from '../../store/types.ts';
import { PROXY_PARAM } from '../../vault/compartment.ts';
import { decide, type Restriction, type VaultAccess } from '../../vault/policy.ts';
import { RESOURCE_TYPES } from '../resource-types.ts';
import { restrictionOf } from './restriction-filter.ts';

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
      // Names a resource of this type → that resource, current, satisfies the type's restrictions.
      narrowed.push({
        kind: 'or',
        filters: [
          { kind: 'not', filter: namesType([type]) },
          {
            kind: 'chain',
            param: PROXY_PARAM,
            targetTypes: [type],
            filter: restrictionOf(base, type, d.restrictions) as SearchFilter,
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
