import type { Prefix } from './search-prefix.ts';

// What a search is, as the store evaluates it: index rows, parsed conditions, a page and its matches.

/** Search index rows of one resource version, one list per value kind (fhir/search/extract.ts fills it). */
export interface IndexRows {
  token: { param: string; system: string | null; code: string | null; text: string | null }[];
  string: { param: string; norm: string; exact: string }[];
  reference: { param: string; targetType: string | null; targetId: string | null; url: string | null }[];
  date: { param: string; lo: number; hi: number }[];
  number: { param: string; value: number }[];
  quantity: { param: string; value: number; system: string | null; code: string | null }[];
  uri: { param: string; value: string }[];
  /** One row per value of one component of one composite occurrence (`row` groups the components). */
  composite: {
    param: string;
    row: number;
    comp: number;
    system: string | null;
    code: string | null;
    num: number | null;
    lo: number | null;
    hi: number | null;
  }[];
}
export type IndexKind = keyof IndexRows;

/** One component of a composite search value. */
export type CompositeCond =
  | { kind: 'token'; system?: string | null; code?: string }
  | { kind: 'number'; range: RangeCond; system?: string; code?: string }
  | { kind: 'date'; range: RangeCond };

/** A value as the interval [lo, hi) its precision implies. */
export interface RangeCond {
  prefix: Prefix;
  lo: number;
  hi: number;
}
/** `system` undefined = any system; null = no system. */
export interface TokenCond {
  system?: string | null;
  code?: string;
}
/** A `type` without `id`: any resource of that type (a Binary's proxy type). */
export interface ReferenceCond {
  type?: string;
  id?: string;
  url?: string;
}

/** Resource types that share the parameters by which they refer to something. */
export interface ProxyLink {
  types: readonly string[];
  params: readonly string[];
}

/** A parsed search, as the store evaluates it; values inside one filter are OR-ed, filters AND-ed. */
export type SearchFilter =
  | { kind: 'id'; ids: string[] }
  | { kind: 'lastUpdated'; values: RangeCond[] }
  | { kind: 'token'; param: string; values: TokenCond[]; not?: boolean }
  | { kind: 'token-text'; param: string; values: string[] }
  | { kind: 'string'; param: string; values: string[]; mode: 'prefix' | 'exact' | 'contains' | 'suffix' | 'equal' }
  | { kind: 'reference'; param: string; values: ReferenceCond[] }
  | { kind: 'date'; param: string; values: RangeCond[] }
  | { kind: 'number'; param: string; values: RangeCond[] }
  | { kind: 'quantity'; param: string; values: (RangeCond & { system?: string; code?: string })[] }
  | { kind: 'uri'; param: string; values: string[]; mode: 'exact' | 'above' | 'below' }
  | { kind: 'composite'; param: string; values: CompositeCond[][] }
  | { kind: 'missing'; param: string; index: IndexKind; missing: boolean }
  | { kind: 'chain'; param: string; targetTypes: string[]; filter: SearchFilter }
  | { kind: 'has'; sourceType: string; param: string; filter: SearchFilter }
  /**
   * `param` names a current resource that itself refers to one of `values` by a parameter its type's link lists
   * (`types` × `params`): a Binary's securityContext standing in for the Binary's access (R4 Binary). Checked
   * per candidate from its own index rows; it cannot drive a search.
   */
  | { kind: 'proxy'; param: string; links: readonly ProxyLink[]; values: ReferenceCond[] }
  | { kind: 'or'; filters: SearchFilter[] }
  | { kind: 'and'; filters: SearchFilter[] }
  /** No match of `filter` (`_filter`'s `not`): within the same partition and type, as every filter. */
  | { kind: 'not'; filter: SearchFilter };

export type SortKey = { kind: 'id' } | { kind: 'lastUpdated' } | { kind: 'index'; index: IndexKind; param: string };

export interface SearchQuery {
  type: string;
  filters: SearchFilter[];
  sort: { key: SortKey; descending: boolean }[];
  limit: number;
  offset: number;
  total: boolean;
  /**
   * Keyset paging: only matches after this one in the page order, which must be (last_updated, id) in the
   * direction of the query's sort (`timeOrder`). Counts (`total`) ignore it.
   */
  after?: PagePosition;
  /**
   * Bytes of content the page may hold: matches past it are left out (the first is always given) and the result
   * says `more`. Unbounded when absent; either way a large resource's content is read only if the page keeps it.
   */
  maxBytes?: number;
}

export interface SearchResult {
  matches: FoundResource[];
  total?: number;
  /** Matches were left out for `maxBytes`: the page continues after the last one given. */
  more?: boolean;
}

/** Where a page of a search in (last_updated, id) order ended. */
export interface PagePosition {
  lastUpdated: string;
  id: string;
}

export interface FoundResource {
  type: string;
  id: string;
  content: string;
  /** Set by `search` on its matches: where a page ending with this match continues. */
  lastUpdated?: string;
}

/** An included resource as the store first reads it: its content only up to 64 KiB, its size always. */
export interface SizedResource {
  type: string;
  id: string;
  /** null when the content is larger than 64 KiB (or was not asked for): read it (`search` by id) once it fits. */
  content: string | null;
  size: number;
}

/** How much an include lookup brings: at most `limit` rows; `contents: false` brings the sizes alone. */
export interface IncludeBound {
  limit?: number | undefined;
  contents?: boolean | undefined;
}

/** The profiles, tags and security labels the current resources of some types carry (distinct, sorted). */
export interface MetaInUse {
  profile: string[];
  tag: { system: string | null; code: string }[];
  security: { system: string | null; code: string }[];
}

export interface ScannedResource extends FoundResource {
  version: number;
}
