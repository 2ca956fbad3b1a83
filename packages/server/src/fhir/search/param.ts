import type { IndexKind, SearchFilter } from '../../store/types.ts';
import { FhirError } from '../errors.ts';
import { ID_RE, RESOURCE_TYPES } from '../resource-types.ts';
import { type SearchParamDef, searchParam } from './definitions.ts';
import { hierarchyFilter } from './hierarchy-filter.ts';
import { listFilter } from './list-filter.ts';
import {
  bad,
  compositeComponent,
  type ParseContext,
  parseDate,
  parseNumber,
  splitDollar,
  splitPipe,
  splitValues,
  unescapeValue,
} from './value-parsers.ts';
import { escapeLike, normalizeString, relativeReference } from './values.ts';

// One search parameter, `name[:modifier]=value` (search.html#parameters, chains, _has), as the filter the store runs.

export const INDEX_OF: Record<string, IndexKind> = {
  composite: 'composite',
  token: 'token',
  string: 'string',
  reference: 'reference',
  date: 'date',
  number: 'number',
  quantity: 'quantity',
  uri: 'uri',
};

/** One `name[:modifier]=value` on `type` → a filter; undefined when the parameter is unknown (lenient mode). */
export function parseParam(
  type: string,
  name: string,
  rawValue: string,
  ctx: ParseContext,
  depth = 0,
): SearchFilter | undefined {
  if (depth > 3) throw bad('chains and _has may nest at most 3 deep');
  // What was read for the top of the search (`_list`, `:below`) is not for a chain's or `_has`'s parameters.
  const nested = { ...ctx, strict: true, lists: undefined, hierarchies: undefined };
  if (name.startsWith('_has:')) {
    const [, sourceType, refParam, ...rest] = name.split(':');
    const innerName = rest.join(':');
    if (!sourceType || !refParam || !innerName || !RESOURCE_TYPES.has(sourceType)) {
      throw bad(`${name}: use _has:Type:reference-parameter:parameter`);
    }
    const def = searchParam(sourceType, refParam);
    if (def?.type !== 'reference') throw bad(`${name}: ${refParam} is not a reference parameter of ${sourceType}`);
    const inner = parseParam(sourceType, innerName, rawValue, nested, depth + 1) as SearchFilter;
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
      f: parseParam(t, rest, rawValue, nested, depth + 1) as SearchFilter,
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
  if (code === '_list') return listFilter(modifier, values, ctx.lists);
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

/** Token values: `code`, `system|code`, `|code` (no system), `system|` (any code of the system). */
function tokenValues(code: string, values: string[]): { system?: string | null; code?: string }[] {
  return values.map((v) => {
    const parts = splitPipe(v);
    if (parts.length === 1) return { code: parts[0] as string };
    if (parts.length !== 2) throw bad(`${code}: "${v}" has more than one |`);
    const [system, c] = parts as [string, string];
    if (system === '') return { system: null, code: c };
    return c === '' ? { system } : { system, code: c };
  });
}

/** `:of-type` values: an Identifier's type and value, `system|code|value`, all three given. */
function ofType(code: string, values: string[]): { system: string; code: string }[] {
  return values.map((v) => {
    const parts = splitPipe(v);
    if (parts.length !== 3 || parts.some((x) => x === '')) {
      throw bad(`${code}:of-type: "${v}" is not system|code|value of the identifier's type and value`);
    }
    const [system, type, value] = parts as [string, string, string];
    return { system: `${system}|${type}`, code: value };
  });
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
      if (modifier === 'below' || modifier === 'above') return hierarchyFilter(code, modifier, values, ctx.hierarchies);
      if (modifier === 'of-type')
        return { kind: 'token', param: `${code}:of-type`, values: ofType(code, values), not: false };
      if (modifier === 'in' || modifier === 'not-in') {
        const codes = values.flatMap((v) => {
          const found = ctx.valueSets?.get(v);
          if (!found)
            throw bad(`${code}:${modifier} is answered in a search only, not in a condition, a scope or _typeFilter`);
          return found;
        });
        return { kind: 'token', param: code, values: codes, not: modifier === 'not-in' };
      }
      if (modifier && modifier !== 'not') throw unsupported();
      return { kind: 'token', param: code, values: tokenValues(code, values), not: modifier === 'not' };
    }
    case 'string': {
      if (modifier && modifier !== 'exact' && modifier !== 'contains') throw unsupported();
      const mode = (modifier ?? 'prefix') as 'prefix' | 'exact' | 'contains';
      const vals = values.map(unescapeValue).map((v) => (mode === 'exact' ? v : normalizeString(v)));
      return { kind: 'string', param: code, values: mode === 'contains' ? vals.map(escapeLike) : vals, mode };
    }
    case 'reference': {
      // Reference.identifier, indexed as a token of its own (search/extract.ts).
      if (modifier === 'identifier') {
        return { kind: 'token', param: `${code}:identifier`, values: tokenValues(code, values), not: false };
      }
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
