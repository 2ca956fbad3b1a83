import type { SearchFilter } from '../../store/types.ts';
import { FhirError } from '../errors.ts';
import { RESOURCE_TYPES } from '../resource-types.ts';
import { searchParam } from './definitions.ts';
import { type FilterExpr, type FilterOp, parseFilterExpression } from './filter-expression.ts';
import { parseParam } from './param.ts';
import { bad, type ParseContext } from './value-parsers.ts';

/**
 * `_filter` (R4 search_filter.html): each comparison becomes the ordinary parameter that asks the same question
 * (`name co "pet"` → `name:contains=pet`, `birthdate ge 2014` → `birthdate=ge2014`, `code ss s|c` →
 * `code:below=s|c`), parsed by param.ts, so that both forms find the same resources; `and`, `or` and `not` join
 * the filters. Where the ordinary syntax has no such question, the parsed filter is adjusted (`Adjustment`).
 *
 * `ne` follows the search prefixes on dates, numbers and quantities (a value outside the given one); on the other
 * types there is no such order, and `ne` means that no value equals the given one, as `:not` does on a token.
 */

const RANGE: ReadonlySet<FilterOp> = new Set(['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap']);
/** `ss`: the value subsumes the resource's code (the code is below it); `sb`: the value is subsumed by it. */
const HIERARCHY_AND_SETS: Partial<Record<FilterOp, string>> = { in: ':in', ni: ':not-in', ss: ':below', sb: ':above' };

/**
 * What the ordinary syntax cannot ask: a date period overlapping the value's (`po`), a string equal to the value
 * but for case and accents (`eq`: "given eq peter" finds Peter), a string ending with it (`ew`).
 */
type Adjustment = 'overlaps' | 'equal' | 'ends-with';

/** One comparison as an ordinary parameter: its name with modifier, its value, and what parsing cannot say. */
interface Translated {
  name: string;
  value: string;
  negate: boolean;
  adjust?: Adjustment;
}

/** Every `_filter` of a search as the ordinary parameters its comparisons amount to (for what is read first). */
export function filterLeafParams(type: string, params: [string, string][]): [string, string][] {
  const out: [string, string][] = [];
  for (const [name, value] of params) {
    if (name !== '_filter') continue;
    const walk = (e: FilterExpr): void => {
      if (e.kind === 'test') {
        const t = translate(type, e);
        out.push([t.name, t.value]);
      } else if (e.kind === 'not') walk(e.expr);
      else e.parts.forEach(walk);
    };
    walk(parseFilterExpression(value));
  }
  return out;
}

export function filterParam(type: string, text: string, ctx: ParseContext): SearchFilter {
  // A comparison is never ignored as an unknown parameter may be: inside `or` or `not` that changes the answer.
  const strict = { ...ctx, strict: true };
  const build = (e: FilterExpr): SearchFilter => {
    if (e.kind === 'not') return { kind: 'not', filter: build(e.expr) };
    if (e.kind !== 'test') return { kind: e.kind, filters: e.parts.map(build) };
    const t = translate(type, e);
    let f: SearchFilter;
    try {
      f = parseParam(type, t.name, t.value, strict) as SearchFilter;
    } catch (err) {
      if (err instanceof FhirError) throw new FhirError(err.status, err.code, `_filter: ${e.path}: ${err.diagnostics}`);
      throw err;
    }
    if (t.adjust) f = adjust(f, t.adjust);
    return t.negate ? { kind: 'not', filter: f } : f;
  };
  return build(parseFilterExpression(text));
}

function translate(type: string, e: { path: string; op: FilterOp; value: string }): Translated {
  const { path, op, value } = e;
  const kind = leafKind(type, path);
  const refuse = () => bad(`_filter: ${op} does not apply to ${path} (a ${kind} parameter)`);
  if (op === 'pr') {
    if (kind === 'id' || kind === 'lastUpdated') throw refuse();
    if (value !== 'true' && value !== 'false') throw bad(`_filter: ${path} pr takes true or false`);
    return { name: `${path}:missing`, value: value === 'true' ? 'false' : 'true', negate: false };
  }
  const plain = asSearchValue(value, kind === 'token' || kind === 'quantity' || kind === 'composite');
  switch (kind) {
    case 'date':
    case 'lastUpdated':
      if (op === 'po') return { name: path, value: `eq${plain}`, negate: false, adjust: 'overlaps' };
      if (!RANGE.has(op)) throw refuse();
      return { name: path, value: `${op}${plain}`, negate: false };
    case 'number':
    case 'quantity':
      if (!RANGE.has(op)) throw refuse();
      return { name: path, value: `${op}${plain}`, negate: false };
    case 'string':
      if (op === 'eq' || op === 'ne') return { name: path, value: plain, negate: op === 'ne', adjust: 'equal' };
      if (op === 'sw') return { name: path, value: plain, negate: false };
      if (op === 'co') return { name: `${path}:contains`, value: plain, negate: false };
      if (op === 'ew') return { name: `${path}:contains`, value: plain, negate: false, adjust: 'ends-with' };
      throw refuse();
    case 'token':
    case 'uri': {
      const modifier = Object.hasOwn(HIERARCHY_AND_SETS, op) ? HIERARCHY_AND_SETS[op] : undefined;
      if (kind === 'uri' && (op === 'in' || op === 'ni')) throw refuse();
      if (modifier) return { name: `${path}${modifier}`, value: plain, negate: false };
      if (op === 'eq' || op === 'ne') return { name: path, value: plain, negate: op === 'ne' };
      throw refuse();
    }
    case 'reference':
      if (op === 'eq' || op === 're' || op === 'ne') return { name: path, value: plain, negate: op === 'ne' };
      throw refuse();
    case 'id':
    case 'composite':
      if (op === 'eq' || op === 'ne') return { name: path, value: plain, negate: op === 'ne' };
      throw refuse();
    default:
      throw refuse();
  }
}

/** The type of the parameter a path ends on, through its chains and `_has`; `id` and `lastUpdated` for those. */
function leafKind(type: string, path: string): string {
  if (path.startsWith('_has:')) {
    const [, source, , ...rest] = path.split(':');
    if (!RESOURCE_TYPES.has(source as string)) throw bad(`_filter: ${path}: unknown resource type ${source}`);
    return leafKind(source as string, rest.join(':'));
  }
  const dot = path.indexOf('.');
  const [code, target] = (dot < 0 ? path : path.slice(0, dot)).split(':') as [string, string | undefined];
  if (dot < 0 && !target && code === '_id') return 'id';
  if (dot < 0 && !target && code === '_lastUpdated') return 'lastUpdated';
  const def = searchParam(type, code);
  if (!def) throw bad(`_filter: unknown search parameter ${code} for ${type}`);
  if (target && def.type !== 'reference') throw bad(`_filter: ${code} of ${type} is not a reference parameter`);
  if (target && !def.targets?.includes(target)) throw bad(`_filter: ${code} of ${type} cannot refer to ${target}`);
  if (dot < 0) return def.type;
  if (def.type !== 'reference') throw bad(`_filter: ${code} of ${type} is not a reference parameter`);
  const rest = path.slice(dot + 1);
  const next = rest.split(/[.:]/)[0] as string;
  const targets = (target ? [target] : (def.targets ?? [])).filter(
    (t) => RESOURCE_TYPES.has(t) && (next === '_id' || next === '_lastUpdated' || searchParam(t, next)),
  );
  const kinds = new Set(targets.map((t) => leafKind(t, rest)));
  if (kinds.size === 0) throw bad(`_filter: ${path}: no target of ${code} has a parameter ${next}`);
  if (kinds.size > 1)
    throw bad(`_filter: ${path}: ${next} differs between the targets of ${code}; name one (${code}:Type.${next})`);
  return kinds.values().next().value as string;
}

/**
 * A value in the ordinary syntax: its backslashes and commas escaped (one value, not a list); `|` and `$` too
 * where they separate nothing (a token's, a quantity's and a composite's keep them: `system|code`, `a$b`).
 */
function asSearchValue(value: string, keepSeparators: boolean): string {
  return value.replace(keepSeparators ? /[\\,]/g : /[\\,|$]/g, '\\$&');
}

/** The parsed filter's comparison changed to the adjustment's, through the chains and `_has` around it. */
function adjust(f: SearchFilter, how: Adjustment): SearchFilter {
  switch (f.kind) {
    case 'or':
    case 'and':
      return { ...f, filters: f.filters.map((x) => adjust(x, how)) };
    case 'chain':
    case 'has':
      return { ...f, filter: adjust(f.filter, how) };
    case 'date':
    case 'lastUpdated':
      return how === 'overlaps' ? { ...f, values: f.values.map((v) => ({ ...v, prefix: 'po' as const })) } : f;
    case 'string':
      return how === 'overlaps' ? f : { ...f, mode: how === 'equal' ? 'equal' : 'suffix' };
    default:
      return f;
  }
}
