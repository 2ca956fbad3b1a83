import type {
  CompositeCond,
  IndexKind,
  Prefix,
  RangeCond,
  SearchFilter,
  SearchQuery,
  SortKey,
} from '../../store/types.ts';
import { FhirError } from '../errors.ts';
import { ID_RE, RESOURCE_TYPES } from '../resource-types.ts';
import { type SearchParamDef, searchParam } from './definitions.ts';
import { dateRange, escapeLike, normalizeString, relativeReference } from './values.ts';

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
  elements: string[] | undefined;
  totalMode: 'none' | 'estimate' | 'accurate' | undefined;
  /** The parameters actually applied, for the self link (search.html#errors: ignored ones are left out). */
  applied: [string, string][];
}

export const DEFAULT_COUNT = 50;
export const MAX_COUNT = 1000;
const MAX_OFFSET = 100_000;
const MAX_VALUES = 100;
const PREFIXES = new Set(['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap']);
const CONTROL = new Set([
  '_count',
  '_offset',
  '_sort',
  '_total',
  '_summary',
  '_elements',
  '_include',
  '_revinclude',
  '_format',
  '_pretty',
]);

const bad = (message: string) => new FhirError(400, 'invalid', message);

/** Splits on commas not escaped with a backslash, and unescapes \, \| \$ \\ (search.html#escaping). */
function splitValues(raw: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i] as string;
    if (c === '\\' && i + 1 < raw.length) {
      cur += `\\${raw[++i]}`;
    } else if (c === ',') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  if (out.length > MAX_VALUES) throw bad(`at most ${MAX_VALUES} values per parameter`);
  return out;
}

/** Splits a token at the first unescaped |, then unescapes. */
function splitPipe(v: string): string[] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < v.length; i++) {
    const c = v[i] as string;
    if (c === '\\' && i + 1 < v.length) cur += v[++i];
    else if (c === '|') {
      parts.push(cur);
      cur = '';
    } else cur += c;
  }
  parts.push(cur);
  return parts;
}
const unescapeValue = (v: string) => v.replace(/\\(.)/g, '$1');

function prefixOf(v: string): { prefix: Prefix; rest: string } {
  const p = v.slice(0, 2);
  if (PREFIXES.has(p) && v.length > 2 && !/^[a-z]/.test(v.slice(2, 3)))
    return { prefix: p as Prefix, rest: v.slice(2) };
  return { prefix: 'eq', rest: v };
}

function parseDate(v: string, name: string): RangeCond {
  const { prefix, rest } = prefixOf(v);
  const r = dateRange(rest);
  if (!r) throw bad(`${name}: "${v}" is not a FHIR date (e.g. 2024, 2024-05-01, ge2024-05-01T10:00:00Z)`);
  return { prefix, lo: r[0], hi: r[1] };
}

function parseNumber(v: string, name: string): RangeCond {
  const { prefix, rest } = prefixOf(v);
  if (!/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(rest)) throw bad(`${name}: "${v}" is not a number`);
  const value = Number(rest);
  if (!Number.isFinite(value)) throw bad(`${name}: "${v}" is out of range`);
  // Implicit precision (search.html#number): 100 means [99.5, 100.5), 100.00 means [99.995, 100.005).
  const decimals = /\.(\d+)/.exec(rest.split(/[eE]/)[0] as string)?.[1]?.length ?? 0;
  const exp = Number(/[eE]([+-]?\d+)/.exec(rest)?.[1] ?? 0);
  const half = 0.5 * 10 ** (exp - decimals);
  return { prefix, lo: value - half, hi: value + half };
}

const INDEX_OF: Record<string, IndexKind> = {
  composite: 'composite',
  token: 'token',
  string: 'string',
  reference: 'reference',
  date: 'date',
  number: 'number',
  quantity: 'quantity',
  uri: 'uri',
};

export interface ParseContext {
  /** Absolute base of this vault, to turn absolute references into relative ones. */
  base: string;
  strict: boolean;
}

/** One `name[:modifier]=value` on `type` → a filter; undefined when the parameter is unknown (lenient mode). */
function parseParam(
  type: string,
  name: string,
  rawValue: string,
  ctx: ParseContext,
  depth = 0,
): SearchFilter | undefined {
  if (depth > 3) throw bad('chains and _has may nest at most 3 deep');
  if (name.startsWith('_has:')) {
    const [, sourceType, refParam, ...rest] = name.split(':');
    const innerName = rest.join(':');
    if (!sourceType || !refParam || !innerName || !RESOURCE_TYPES.has(sourceType)) {
      throw bad(`${name}: use _has:Type:reference-parameter:parameter`);
    }
    const def = searchParam(sourceType, refParam);
    if (def?.type !== 'reference') throw bad(`${name}: ${refParam} is not a reference parameter of ${sourceType}`);
    const inner = parseParam(sourceType, innerName, rawValue, { ...ctx, strict: true }, depth + 1) as SearchFilter;
    return { kind: 'has', sourceType, param: refParam, filter: inner };
  }
  const dot = name.indexOf('.');
  if (dot > 0) {
    // Chaining: subject:Patient.name=peter or subject.name=peter.
    const [head, modifier] = name.slice(0, dot).split(':') as [string, string | undefined];
    const def = searchParam(type, head);
    if (def?.type !== 'reference') {
      if (ctx.strict) throw bad(`${name}: ${head} is not a reference parameter of ${type}`);
      return undefined;
    }
    const targets = modifier ? [modifier] : (def.targets ?? []);
    if (modifier && !def.targets?.includes(modifier)) throw bad(`${name}: ${head} cannot refer to ${modifier}`);
    const rest = name.slice(dot + 1);
    const usable = targets.filter((t) => searchParam(t, rest.split(/[.:]/)[0] as string) || rest.startsWith('_'));
    if (usable.length === 0) throw bad(`${name}: no target of ${head} has a parameter ${rest}`);
    const filters = usable.map((t) => ({
      t,
      f: parseParam(t, rest, rawValue, { ...ctx, strict: true }, depth + 1) as SearchFilter,
    }));
    return {
      kind: 'or',
      filters: filters.map(({ t, f }) => ({ kind: 'chain', param: head, targetTypes: [t], filter: f })),
    };
  }

  const [code, modifier] = name.split(':') as [string, string | undefined];
  const values = splitValues(rawValue);
  if (values.some((v) => v === '')) throw bad(`${name}: empty value`);

  if (code === '_id') {
    if (modifier) throw bad(`${name}: modifier not supported on _id`);
    const ids = values.map(unescapeValue);
    if (ids.some((id) => !ID_RE.test(id))) throw bad('_id: not a valid id');
    return { kind: 'id', ids };
  }
  if (code === '_lastUpdated') {
    if (modifier) throw bad(`${name}: modifier not supported on _lastUpdated`);
    return { kind: 'lastUpdated', values: values.map((v) => parseDate(v, name)) };
  }

  const def = searchParam(type, code);
  if (!def) {
    if (ctx.strict) throw bad(`unknown search parameter ${code} for ${type}`);
    return undefined;
  }
  if (modifier === 'missing') {
    if (values.length !== 1 || !['true', 'false'].includes(values[0] as string))
      throw bad(`${name}: use true or false`);
    return { kind: 'missing', param: code, index: INDEX_OF[def.type] as IndexKind, missing: values[0] === 'true' };
  }
  return typedFilter(code, def, modifier, values, ctx);
}

function typedFilter(
  code: string,
  def: SearchParamDef,
  modifier: string | undefined,
  values: string[],
  ctx: ParseContext,
): SearchFilter {
  const unsupported = () =>
    new FhirError(400, 'not-supported', `modifier :${modifier} is not supported on ${code} (${def.type})`);
  switch (def.type) {
    case 'token': {
      if (modifier === 'text')
        return {
          kind: 'token-text',
          param: code,
          values: values.map((v) => escapeLike(normalizeString(unescapeValue(v)))),
        };
      if (modifier && modifier !== 'not') throw unsupported();
      const conds = values.map((v) => {
        const parts = splitPipe(v);
        if (parts.length === 1) return { code: parts[0] as string };
        if (parts.length !== 2) throw bad(`${code}: "${v}" has more than one |`);
        const [system, c] = parts as [string, string];
        if (system === '') return { system: null, code: c };
        return c === '' ? { system } : { system, code: c };
      });
      return { kind: 'token', param: code, values: conds, not: modifier === 'not' };
    }
    case 'string': {
      if (modifier && modifier !== 'exact' && modifier !== 'contains') throw unsupported();
      const mode = (modifier ?? 'prefix') as 'prefix' | 'exact' | 'contains';
      const vals = values.map(unescapeValue).map((v) => (mode === 'exact' ? v : normalizeString(v)));
      return { kind: 'string', param: code, values: mode === 'contains' ? vals.map(escapeLike) : vals, mode };
    }
    case 'reference': {
      if (modifier && !def.targets?.includes(modifier)) {
        throw modifier && RESOURCE_TYPES.has(modifier) ? bad(`${code} cannot refer to ${modifier}`) : unsupported();
      }
      return {
        kind: 'reference',
        param: code,
        values: values.map(unescapeValue).map((v) => {
          if (modifier) {
            if (!ID_RE.test(v)) throw bad(`${code}:${modifier}: "${v}" is not an id`);
            return { type: modifier, id: v };
          }
          const local = v.startsWith(`${ctx.base}/`) ? v.slice(ctx.base.length + 1) : v;
          const rel = relativeReference(local);
          if (rel) return rel;
          if (ID_RE.test(local)) return { id: local };
          return { url: v };
        }),
      };
    }
    case 'date':
      if (modifier) throw unsupported();
      return { kind: 'date', param: code, values: values.map((v) => parseDate(v, code)) };
    case 'number':
      if (modifier) throw unsupported();
      return { kind: 'number', param: code, values: values.map((v) => parseNumber(v, code)) };
    case 'quantity':
      if (modifier) throw unsupported();
      return {
        kind: 'quantity',
        param: code,
        values: values.map((v) => {
          const [num, system, unit, ...extra] = splitPipe(v);
          if (extra.length) throw bad(`${code}: use number|system|code`);
          const c = parseNumber(num as string, code);
          return { ...c, ...(system ? { system } : {}), ...(unit ? { code: unit } : {}) };
        }),
      };
    case 'uri':
      if (modifier && modifier !== 'above' && modifier !== 'below') throw unsupported();
      return {
        kind: 'uri',
        param: code,
        values: values.map(unescapeValue),
        mode: (modifier ?? 'exact') as 'exact' | 'above' | 'below',
      };
    case 'composite': {
      if (modifier) throw unsupported();
      const components = def.components ?? [];
      return {
        kind: 'composite',
        param: code,
        values: values.map((v) => {
          const parts = splitDollar(v);
          if (parts.length !== components.length)
            throw bad(`${code}: give ${components.length} components separated by $`);
          return parts.map((part, k) => compositeComponent(code, (components[k] as { type: string }).type, part, ctx));
        }),
      };
    }
  }
}

/** Splits a composite value at unescaped $ (search.html#composite). */
function splitDollar(v: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < v.length; i++) {
    const c = v[i] as string;
    if (c === '\\' && i + 1 < v.length) cur += `\\${v[++i]}`;
    else if (c === '$') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

function compositeComponent(code: string, type: string, value: string, ctx: ParseContext): CompositeCond {
  switch (type) {
    case 'quantity':
    case 'number': {
      const [num, system, unit, ...extra] = splitPipe(value);
      if (extra.length) throw bad(`${code}: use number|system|code`);
      return {
        kind: 'number',
        range: parseNumber(num as string, code),
        ...(system ? { system } : {}),
        ...(unit ? { code: unit } : {}),
      };
    }
    case 'date':
      return { kind: 'date', range: parseDate(value, code) };
    case 'reference': {
      const local = value.startsWith(`${ctx.base}/`) ? value.slice(ctx.base.length + 1) : value;
      const rel = relativeReference(unescapeValue(local));
      return rel ? { kind: 'token', system: rel.type, code: rel.id } : { kind: 'token', code: unescapeValue(value) };
    }
    case 'string':
      return { kind: 'token', code: normalizeString(unescapeValue(value)) };
    default: {
      const parts = splitPipe(value);
      if (parts.length === 1) return { kind: 'token', code: parts[0] as string };
      const [system, c] = parts as [string, string];
      if (system === '') return { kind: 'token', system: null, code: c };
      return c === '' ? { kind: 'token', system } : { kind: 'token', system, code: c };
    }
  }
}

function parseInclude(type: string, value: string, reverse: boolean, iterate: boolean): IncludeDirective {
  const [sourceType, param, targetType, ...extra] = value.split(':');
  const name = reverse ? '_revinclude' : '_include';
  if (!sourceType || !param || extra.length || value === '*')
    throw bad(`${name}=${value}: use SourceType:parameter[:TargetType]`);
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

function parseSort(type: string, value: string): { key: SortKey; descending: boolean }[] {
  return value.split(',').map((raw) => {
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
  let elements: string[] | undefined;
  let totalMode: ParsedSearch['totalMode'];
  if (params.length > 200) throw bad('too many search parameters');
  for (const [name, value] of params) {
    const base = name.split(':')[0] as string;
    if (CONTROL.has(base)) {
      switch (base) {
        case '_count':
          query.limit = intParam('_count', value, MAX_COUNT);
          break;
        case '_offset':
          query.offset = intParam('_offset', value, MAX_OFFSET);
          break;
        case '_sort':
          query.sort = parseSort(type, value);
          break;
        case '_total':
          if (!['none', 'estimate', 'accurate'].includes(value)) throw bad('_total must be none, estimate or accurate');
          totalMode = value as ParsedSearch['totalMode'];
          break;
        case '_summary':
          if (value === 'count') summaryCount = true;
          else if (value !== 'false')
            throw new FhirError(400, 'not-supported', `_summary=${value} is not supported (count and false are)`);
          break;
        case '_elements':
          elements = value
            .split(',')
            .map((e) => e.trim())
            .filter(Boolean);
          if (elements.some((e) => !/^[a-zA-Z][A-Za-z0-9]*$/.test(e)))
            throw bad('_elements takes top-level element names');
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
    const filter = parseParam(type, name, value, ctx);
    if (filter) {
      query.filters.push(filter);
      applied.push([name, value]);
    }
  }
  if (includes.length > 10) throw bad('at most 10 _include/_revinclude values');
  return { query, includes, summaryCount, elements, totalMode, applied };
}
