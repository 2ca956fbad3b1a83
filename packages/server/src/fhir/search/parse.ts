import { timeOrder } from '../../store/search-order.ts';
import type { IndexKind, SearchQuery, SortKey } from '../../store/types.ts';
import { RESOURCE_TYPES } from '../resource-types.ts';
import { decodeCursor } from './cursor.ts';
import { searchParam } from './definitions.ts';
import { filterParam } from './filter-param.ts';
import { INDEX_OF, parseParam } from './param.ts';
import { parseElements, type SummaryMode } from './subset.ts';
import { bad, type ParseContext } from './value-parsers.ts';

export type { ParseContext } from './value-parsers.ts';

export interface IncludeDirective {
  sourceType: string;
  param: string;
  targetType?: string | undefined;
  iterate: boolean;
  reverse: boolean;
}

export interface ParsedSearch {
  query: SearchQuery;
  includes: IncludeDirective[];
  summaryCount: boolean;
  /** `_summary=true|text|data`: matches are subsetted (search/subset.ts). */
  summary: SummaryMode | undefined;
  elements: string[] | undefined;
  totalMode: 'none' | 'estimate' | 'accurate' | undefined;
  /** The parameters actually applied, for the self link (search.html#errors: ignored ones are left out). */
  applied: [string, string][];
}

export const DEFAULT_COUNT = 50;
export const MAX_COUNT = 1000;
export const MAX_OFFSET = 100_000;
const CONTROL = new Set([
  '_count',
  '_offset',
  '_cursor',
  '_sort',
  '_total',
  '_summary',
  '_elements',
  '_include',
  '_revinclude',
  '_format',
  '_pretty',
]);

function parseInclude(type: string, value: string, reverse: boolean, iterate: boolean): IncludeDirective {
  const [sourceType, param, targetType, ...extra] = value.split(':');
  const name = reverse ? '_revinclude' : '_include';
  if (!sourceType || !param || extra.length || value === '*')
    throw bad(`${name}=${value}: use SourceType:parameter[:TargetType] (or SourceType:*, *:*)`);
  // Wildcards (search.html#include): every reference parameter, of one source type or of all.
  if (param === '*') {
    if (targetType) throw bad(`${name}=${value}: a wildcard parameter takes no target type`);
    if (sourceType !== '*' && !RESOURCE_TYPES.has(sourceType))
      throw bad(`${name}: unknown resource type ${sourceType}`);
    if (!reverse && !iterate && sourceType !== type && sourceType !== '*')
      throw bad(`${name}=${value}: the source must be ${type} (or use :iterate)`);
    return { sourceType, param, targetType: undefined, iterate, reverse };
  }
  if (!RESOURCE_TYPES.has(sourceType)) throw bad(`${name}: unknown resource type ${sourceType}`);
  if (!reverse && !iterate && sourceType !== type)
    throw bad(`${name}=${value}: the source must be ${type} (or use :iterate)`);
  const def = searchParam(sourceType, param);
  if (def?.type !== 'reference') throw bad(`${name}: ${param} is not a reference parameter of ${sourceType}`);
  if (targetType && !def.targets?.includes(targetType))
    throw bad(`${name}: ${sourceType}.${param} cannot refer to ${targetType}`);
  return { sourceType, param, targetType, iterate, reverse };
}

const SORTABLE = new Set(['token', 'string', 'date', 'number', 'quantity', 'uri', 'reference']);
/** Each sort key is a lookup per match in the statement; more than a few orders nothing further. */
const MAX_SORT_KEYS = 10;

function parseSort(type: string, value: string): { key: SortKey; descending: boolean }[] {
  const keys = value.split(',');
  if (keys.length > MAX_SORT_KEYS) throw bad(`_sort takes at most ${MAX_SORT_KEYS} parameters`);
  return keys.map((raw) => {
    const descending = raw.startsWith('-');
    const code = descending ? raw.slice(1) : raw;
    if (code === '_id') return { key: { kind: 'id' }, descending };
    if (code === '_lastUpdated') return { key: { kind: 'lastUpdated' }, descending };
    const def = searchParam(type, code);
    if (!def || !SORTABLE.has(def.type)) throw bad(`_sort: ${code} is not a sortable parameter of ${type}`);
    return { key: { kind: 'index', index: INDEX_OF[def.type] as IndexKind, param: code }, descending };
  });
}

function intParam(name: string, value: string, max: number): number {
  if (!/^\d{1,9}$/.test(value)) throw bad(`${name} must be a whole number`);
  return Math.min(Number(value), max);
}

/** Parses a search request (query string or _search form) for `type` into what the store runs. */
export function parseSearch(type: string, params: [string, string][], ctx: ParseContext): ParsedSearch {
  const query: SearchQuery = { type, filters: [], sort: [], limit: DEFAULT_COUNT, offset: 0, total: false };
  const includes: IncludeDirective[] = [];
  const applied: [string, string][] = [];
  let summaryCount = false;
  let summary: SummaryMode | undefined;
  let elements: string[] | undefined;
  let totalMode: ParsedSearch['totalMode'];
  let sawOffset = false;
  if (params.length > 200) throw bad('too many search parameters');
  for (const [name, value] of params) {
    const base = name.split(':')[0] as string;
    if (CONTROL.has(base)) {
      switch (base) {
        case '_count':
          query.limit = intParam('_count', value, MAX_COUNT);
          break;
        case '_offset':
          // Refused beyond the cap, not clamped: a clamped offset answers the same page again and again.
          query.offset = intParam('_offset', value, Number.MAX_SAFE_INTEGER);
          if (query.offset > MAX_OFFSET) {
            throw bad(
              `_offset goes up to ${MAX_OFFSET}: narrow the search, or page in _lastUpdated order, whose next links continue by position`,
            );
          }
          sawOffset = true;
          break;
        case '_cursor': {
          const cursor = decodeCursor(value);
          query.after = cursor.after;
          query.offset = cursor.offset;
          break;
        }
        case '_sort':
          query.sort = parseSort(type, value);
          break;
        case '_total':
          if (!['none', 'estimate', 'accurate'].includes(value)) throw bad('_total must be none, estimate or accurate');
          totalMode = value as ParsedSearch['totalMode'];
          break;
        case '_summary':
          if (value === 'count') summaryCount = true;
          else if (value === 'true' || value === 'text' || value === 'data') summary = value;
          else if (value !== 'false') throw bad('_summary is one of true, text, data, count, false');
          break;
        case '_elements':
          elements = parseElements(value);
          break;
        case '_include':
        case '_revinclude': {
          const mod = name.split(':')[1];
          if (mod && mod !== 'iterate' && mod !== 'recurse') throw bad(`${name}: unknown modifier`);
          for (const v of value.split(',')) includes.push(parseInclude(type, v, base === '_revinclude', !!mod));
          break;
        }
        default:
          continue; // _format, _pretty: handled elsewhere or ignored
      }
      applied.push([name, value]);
      continue;
    }
    if (base === '_filter') {
      if (name !== '_filter') throw bad(`${name}: _filter takes no modifier`);
      query.filters.push(filterParam(type, value, ctx));
      applied.push([name, value]);
      continue;
    }
    const filter = parseParam(type, name, value, ctx);
    if (filter) {
      query.filters.push(filter);
      applied.push([name, value]);
    }
  }
  if (query.after && sawOffset) throw bad('use _cursor or _offset, not both');
  if (query.after && !timeOrder(query)) throw bad('_cursor continues a search in _lastUpdated order only');
  if (includes.length > 10) throw bad('at most 10 _include/_revinclude values');
  if (summary && elements) throw bad('use _summary or _elements, not both');
  return { query, includes, summaryCount, summary, elements, totalMode, applied };
}
