import type { SearchFilter } from '../../store/types.ts';
import { compartmentFilter } from '../../vault/compartment.ts';
import type { Restriction } from '../../vault/policy.ts';
import { insufficientScope } from '../bearer.ts';
import type { FhirContext } from '../context.ts';
import { parseSearch } from './parse.ts';

/**
 * Scope restrictions (granular queries, the launch patient's compartment) as one filter every match must
 * also satisfy: the restrictions are OR-ed, the parts of one restriction AND-ed.
 */
export function restrictionFilter(
  ctx: FhirContext,
  type: string,
  restrictions: Restriction[] | undefined,
): SearchFilter | undefined {
  if (!restrictions) return undefined;
  const filters = restrictions.map((r): SearchFilter => {
    const parts: SearchFilter[] = [];
    if (r.query !== undefined) {
      parts.push(
        ...parseSearch(type, [...new URLSearchParams(r.query)], { base: ctx.base, strict: true }).query.filters,
      );
    }
    const compartment = r.patient === undefined ? undefined : compartmentFilter(type, [r.patient]);
    if (compartment) parts.push(compartment);
    return { kind: 'and', filters: parts };
  });
  return { kind: 'or', filters };
}

/** Under restricted scopes a single resource may be read only if its current version satisfies them (I12, I14). */
export async function assertVisible(
  ctx: FhirContext,
  type: string,
  id: string,
  restrictions: Restriction[] | undefined,
): Promise<void> {
  const filter = restrictionFilter(ctx, type, restrictions);
  if (!filter) return;
  const { matches } = await ctx.store.resources.search(ctx.partition, {
    type,
    filters: [{ kind: 'id', ids: [id] }, filter],
    sort: [],
    limit: 1,
    offset: 0,
    total: false,
  });
  if (matches.length === 0) throw insufficientScope(`the access token's scopes for ${type} do not cover this resource`);
}
