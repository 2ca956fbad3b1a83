import type { CurrentVersion, IndexRows, SearchFilter, SearchQuery, SearchResult } from '../../store/types.ts';
import { compartmentFilter, indexInCompartment, proxyOf } from '../../vault/compartment.ts';
import type { Restriction } from '../../vault/policy.ts';
import type { FhirContext } from '../context.ts';
import { proxyUnreadable } from './binary-proxy.ts';
import { extractIndex } from './extract.ts';
import { parseSearch } from './parse.ts';
import { matchesById } from './restriction-filter.ts';

type Search = (q: SearchQuery) => Promise<SearchResult>;

/**
 * Whether an older version of a resource may be shown (vread, instance history) under the token's restrictions.
 * The current version passing them (`assertVisible`) says nothing about the others: an Observation filed under
 * the child and corrected to the mother, or reclassified from psychiatry to a category the app may read, would
 * show the child's or the psychiatric content through its history. The search index holds current versions only,
 * so an older version is judged by its own content: its compartments from its own references (a Binary's through
 * its securityContext's resource as that is now), a granular query by the index rows it would have. A query
 * condition that cannot be judged this way (dates, quantities, chains…) hides the version: unknown is not a yes.
 */
export async function versionVisible(
  ctx: FhirContext,
  v: CurrentVersion,
  restrictions: Restriction[] | undefined,
): Promise<boolean> {
  if (v.content === undefined) return true;
  const search: Search = (q) => ctx.store.resources.search(ctx.partition, q);
  const index = extractIndex(JSON.parse(v.content) as Record<string, unknown>);
  if (v.type === 'Binary' && (await proxyUnreadable(ctx.access, ctx.base, index, search))) return false;
  if (!restrictions) return true;
  for (const r of restrictions) {
    if (r.patient !== undefined && !(await inCompartment(search, v.type, v.id, index, r.patient))) continue;
    if (r.query !== undefined) {
      const { filters } = parseSearch(v.type, [...new URLSearchParams(r.query)], {
        base: ctx.base,
        strict: true,
      }).query;
      if (judge({ kind: 'and', filters }, v.id, index) !== true) continue;
    }
    return true;
  }
  return false;
}

/**
 * compartment.ts's test on a version's own index rows; a Binary standing in by proxy is in the compartments its
 * proxy is in as `search` sees it (in a transaction: written before it in a Bundle, or committed).
 */
export async function inCompartment(
  search: Search,
  type: string,
  id: string,
  index: IndexRows,
  patient: string,
): Promise<boolean> {
  if (indexInCompartment(type, id, index, patient)) return true;
  const proxy = proxyOf(type, index);
  const filter = proxy && compartmentFilter(proxy.type, [patient]);
  if (!proxy || !filter) return false;
  return matchesById(search, proxy.type, proxy.id, filter);
}

const unlike = (v: string) => v.replace(/\\([\\%_])/g, '$1');

/** A filter on one version's index rows, as store/sql/search-filter.ts decides it; undefined: cannot tell. */
function judge(f: SearchFilter, id: string, index: IndexRows): boolean | undefined {
  switch (f.kind) {
    case 'id':
      return f.ids.includes(id);
    case 'token': {
      const hit = index.token.some(
        (r) =>
          r.param === f.param &&
          f.values.some(
            (c) =>
              (c.system === undefined || (c.system === null ? r.system === null : r.system === c.system)) &&
              (c.code === undefined || r.code === c.code),
          ),
      );
      return f.not ? !hit : hit;
    }
    case 'token-text':
      return index.token.some(
        (r) => r.param === f.param && f.values.some((v) => r.text?.toLowerCase().startsWith(unlike(v)) === true),
      );
    case 'string':
      return index.string.some(
        (r) =>
          r.param === f.param &&
          f.values.some((v) => {
            if (f.mode === 'exact') return r.exact === v;
            if (f.mode === 'equal') return r.norm === v;
            if (f.mode === 'contains') return r.norm.includes(unlike(v));
            if (f.mode === 'suffix') return r.norm.endsWith(unlike(v));
            return r.norm.startsWith(v);
          }),
      );
    case 'reference':
      return index.reference.some(
        (r) =>
          r.param === f.param &&
          f.values.some((c) =>
            c.url !== undefined
              ? r.url === c.url
              : (c.type === undefined || r.targetType === c.type) && (c.id === undefined || r.targetId === c.id),
          ),
      );
    case 'uri':
      return f.mode === 'exact' ? index.uri.some((r) => r.param === f.param && f.values.includes(r.value)) : undefined;
    case 'missing': {
      const rows = index[f.index] as { param: string }[];
      return rows.some((r) => r.param === f.param) !== f.missing;
    }
    case 'and': {
      const parts = f.filters.map((x) => judge(x, id, index));
      return parts.includes(false) ? false : parts.includes(undefined) ? undefined : true;
    }
    case 'or': {
      const parts = f.filters.map((x) => judge(x, id, index));
      return parts.includes(true) ? true : parts.includes(undefined) ? undefined : false;
    }
    case 'not': {
      const inner = judge(f.filter, id, index);
      return inner === undefined ? undefined : !inner;
    }
    default:
      return undefined;
  }
}
