/**
 * SMART App Launch scope grammar (v1 `.read/.write/.*` and v2 `.cruds` with optional `?query`),
 * and the rule for whether a registered scope covers a requested one.
 */

import { RESOURCE_TYPES } from '../fhir/resource-types.ts';

export type Permission = 'c' | 'r' | 'u' | 'd' | 's';
export type ScopeContext = 'patient' | 'user' | 'system';

export interface SmartScope {
  raw: string;
  context: ScopeContext;
  /** A resource type or `*`. */
  resourceType: string;
  permissions: ReadonlySet<Permission>;
  /** Granular restriction, e.g. `category=http://…|laboratory`, or undefined. */
  query: string | undefined;
  version: 1 | 2;
}

const V1: Record<string, Permission[]> = {
  read: ['r', 's'],
  write: ['c', 'u', 'd'],
  '*': ['c', 'r', 'u', 'd', 's'],
};
const V2_ORDER = 'cruds';
const SCOPE_RE = /^(patient|user|system)\/([A-Z][A-Za-z]{1,63}|\*)\.([a-z*]+)(?:\?(.+))?$/;

/** True for anything shaped like a SMART resource scope, valid or not. */
export function looksLikeSmartScope(scope: string): boolean {
  return /^(patient|user|system)\//.test(scope);
}

/** Parses a SMART resource scope; undefined when it is not one or is malformed (e.g. `.dus`, out of order). */
export function parseSmartScope(raw: string): SmartScope | undefined {
  const m = SCOPE_RE.exec(raw);
  if (!m) return undefined;
  const [, context, resourceType, perms, query] = m as unknown as [string, ScopeContext, string, string, string?];
  // `system/Foo.rs` names nothing that exists: refused (invalid_scope) rather than granted as a dead letter.
  if (resourceType !== '*' && !RESOURCE_TYPES.has(resourceType)) return undefined;
  // Own keys only: `.constructor` is letters too, and must not find Object's.
  const v1 = Object.hasOwn(V1, perms) ? V1[perms] : undefined;
  if (v1) {
    if (query !== undefined) return undefined; // granular queries exist only in v2
    return { raw, context, resourceType, permissions: new Set(v1), query: undefined, version: 1 };
  }
  // v2: a non-empty subsequence of "cruds", each letter once, in that order.
  let last = -1;
  for (const ch of perms) {
    const at = V2_ORDER.indexOf(ch);
    if (at <= last) return undefined;
    last = at;
  }
  if (query !== undefined && !isWellFormedQuery(query)) return undefined;
  return {
    raw,
    context,
    resourceType,
    permissions: new Set(perms as unknown as Iterable<Permission>),
    query,
    version: 2,
  };
}

function isWellFormedQuery(query: string): boolean {
  return query.split('&').every((pair) => /^[A-Za-z_][A-Za-z0-9_:.-]*=[^=&\s]+$/.test(pair));
}

function covers(granted: SmartScope, requested: SmartScope): boolean {
  if (granted.context !== requested.context) return false;
  if (granted.resourceType !== '*' && granted.resourceType !== requested.resourceType) return false;
  for (const p of requested.permissions) if (!granted.permissions.has(p)) return false;
  // A granular grant covers only the same granular request; an unrestricted grant covers any.
  return granted.query === undefined || granted.query === requested.query;
}

/**
 * Whether `requested` may be granted to a client registered with `allowed`. SMART resource scopes are
 * covered by broader registered ones (`system/*.rs` covers `system/Observation.rs`); any other scope
 * (`launch`, `ns:cara:scp.Contributor`, …) must be registered exactly.
 */
export function isCovered(requested: string, allowed: readonly string[]): boolean {
  const req = parseSmartScope(requested);
  if (!req) return !looksLikeSmartScope(requested) && allowed.includes(requested);
  return allowed.some((a) => {
    const g = parseSmartScope(a);
    return g !== undefined && covers(g, req);
  });
}

/**
 * CARA's own scopes (reference/domain.md §1.2) are usable as registered and act on vaults as these SMART
 * scopes do — always intersected with the vault's grants, which stay the real limit.
 */
export const CARA_SCOPE_ALIASES: Readonly<Record<string, string>> = {
  'ns:cara:scp.Contributor': 'system/*.cruds',
  'ns:cara:scp.Reader': 'system/*.rs',
};

/** The SMART scopes a token's scope string stands for on a vault (aliases expanded, the rest as given). */
export function vaultScopes(scope: string | undefined): string[] {
  return splitScope(scope).map((s) => (Object.hasOwn(CARA_SCOPE_ALIASES, s) ? CARA_SCOPE_ALIASES[s] : undefined) ?? s);
}

/** Splits a scope parameter the way RFC 6749 §3.3 defines it (space-delimited, no empty items). */
export function splitScope(scope: string | undefined): string[] {
  if (!scope) return [];
  return [...new Set(scope.split(' ').filter((s) => s.length > 0))];
}
