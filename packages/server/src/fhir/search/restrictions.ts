import type { CurrentVersion, SearchFilter } from '../../store/types.ts';
import { decide, type Restriction, type VaultAccess } from '../../vault/policy.ts';
import { insufficientScope } from '../bearer.ts';
import type { FhirContext } from '../context.ts';
import { binaryProxyFilter } from './binary-proxy.ts';
import { matchesById, restrictionOf } from './restriction-filter.ts';
import { versionVisible } from './version-visible.ts';

/**
 * Scope restrictions (granular queries, the launch patient's compartment) as one filter every match must
 * also satisfy — for a Binary with its proxy's (`binaryProxyFilter`). Undefined: nothing narrows the type.
 */
export function restrictionFilter(
  ctx: FhirContext,
  type: string,
  restrictions: Restriction[] | undefined,
): SearchFilter | undefined {
  return scopeFilter(ctx.access, ctx.base, type, restrictions);
}

function scopeFilter(
  access: VaultAccess,
  base: string,
  type: string,
  restrictions: Restriction[] | undefined,
): SearchFilter | undefined {
  const own = restrictionOf(base, type, restrictions);
  const proxy = type === 'Binary' ? binaryProxyFilter(access, base, restrictions) : undefined;
  return own && proxy ? { kind: 'and', filters: [own, proxy] } : (own ?? proxy);
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
  const visible = await matchesById((q) => ctx.store.resources.search(ctx.partition, q), type, id, filter);
  if (!visible) throw insufficientScope(`the access token's scopes for ${type} do not cover this resource`);
}

/**
 * vread and instance history: a version other than the current one passes the restrictions by its own content
 * (version-visible.ts); the current one by `assertVisible`, which the caller has asked first.
 */
export async function assertVersionVisible(
  ctx: FhirContext,
  v: CurrentVersion,
  restrictions: Restriction[] | undefined,
): Promise<void> {
  if (!(await versionShown(ctx, restrictions)(v)))
    throw insufficientScope(`the access token's scopes for ${v.type} do not cover version ${v.version} of it`);
}

/** The test of `assertVersionVisible` for the versions of one resource, asked once for what they share. */
export function versionShown(
  ctx: FhirContext,
  restrictions: Restriction[] | undefined,
): (v: CurrentVersion) => Promise<boolean> {
  let narrowed: boolean | undefined;
  let current: Promise<number | undefined> | undefined;
  return async (v) => {
    narrowed ??= restrictionFilter(ctx, v.type, restrictions) !== undefined;
    if (!narrowed) return true;
    current ??= ctx.store.resources.current(ctx.partition, v.type, v.id).then((c) => c?.version);
    if ((await current) === v.version) return true;
    return versionVisible(ctx, v, restrictions);
  };
}

/**
 * A chain tests the resources a match refers to and `_has` the resources referring to it: each is a search of
 * its own type and passes that type's scope checks, else a search of a readable type answers yes or no about
 * what the token may not see (another patient's name through an Observation that names both, a type without a
 * scope at all). A type the token may not search is 403; a restricted one is narrowed as its own search would be.
 */
export function chainsInScope(access: VaultAccess, base: string, filters: SearchFilter[]): SearchFilter[] {
  const narrowed = (type: string, inner: SearchFilter, what: string): SearchFilter => {
    const d = decide(access, type, 'search-type');
    if (!d.allowed) throw insufficientScope(`${what} searches ${type}: ${d.reason}`);
    const scoped = inScope(inner);
    const restriction = scopeFilter(access, base, type, d.restrictions);
    return restriction ? { kind: 'and', filters: [scoped, restriction] } : scoped;
  };
  const inScope = (f: SearchFilter): SearchFilter => {
    switch (f.kind) {
      case 'and':
      case 'or':
        return { ...f, filters: f.filters.map(inScope) };
      case 'not':
        return { ...f, filter: inScope(f.filter) };
      case 'chain':
        return {
          kind: 'or',
          filters: f.targetTypes.map((t) => ({
            ...f,
            targetTypes: [t],
            filter: narrowed(t, f.filter, `the chain ${f.param}:${t}`),
          })),
        };
      case 'has':
        return { ...f, filter: narrowed(f.sourceType, f.filter, `_has:${f.sourceType}:${f.param}`) };
      default:
        return f;
    }
  };
  return filters.map(inScope);
}
