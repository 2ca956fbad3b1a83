import { bad } from './value-parsers.ts';

/**
 * The `_filter` expression language (R4 search_filter.html) read into a tree: comparisons `path op value`,
 * joined by `and` or `or`, grouped by parentheses, negated by `not (…)`. What each comparison means is
 * filter-param.ts's; this module knows only the syntax.
 */
export type FilterExpr =
  | { kind: 'and' | 'or'; parts: FilterExpr[] }
  | { kind: 'not'; expr: FilterExpr }
  | { kind: 'test'; path: string; op: FilterOp; value: string };

// biome-ignore format: one line of operators reads better than nineteen
const OP_LIST = ['eq', 'ne', 'co', 'sw', 'ew', 'gt', 'lt', 'ge', 'le', 'ap', 'sa', 'eb', 'pr', 'po', 'ss', 'sb', 'in', 'ni', 're'] as const;
export type FilterOp = (typeof OP_LIST)[number];
const OPS = new Set<string>(OP_LIST);

/** Comparisons in one `_filter`: as many as values in one ordinary parameter. */
export const MAX_TESTS = 100;
/** Parentheses (and `not`) nest at most this deep: the reader recurses once per level. */
const MAX_DEPTH = 16;

/**
 * A parameter path: a name, optionally `:Type`, chained by dots (`subject:Patient.name`), optionally after
 * `_has:Type:reference:` (R4B's hasSpecifier). A `[filter]` on a step is the spec's mechanism for parameters
 * carevault does not define (`related[type eq has-component].target`).
 */
const NAME = '[A-Za-z_][A-Za-z0-9_-]*';
const TYPE = '[A-Z][A-Za-z]*';
const PATH = new RegExp(`^(?:_has:${TYPE}:${NAME}:)*${NAME}(?::${TYPE})?(?:\\.${NAME}(?::${TYPE})?)*$`);

interface Reader {
  text: string;
  pos: number;
  tests: number;
}

const fail = (r: Reader, message: string) => bad(`_filter: ${message} at character ${r.pos + 1}`);
const isSpace = (c: string | undefined) => c === ' ' || c === '\t' || c === '\n' || c === '\r';

function skipSpace(r: Reader): boolean {
  const start = r.pos;
  while (isSpace(r.text[r.pos])) r.pos++;
  return r.pos > start;
}

/** Letters at the position, not consumed. */
function word(r: Reader): string {
  return /^[A-Za-z]+/.exec(r.text.slice(r.pos, r.pos + 8))?.[0] ?? '';
}

/** Characters up to the next space (or, for a value, `)` or `]`), consumed. */
function until(r: Reader, stops: string): string {
  const start = r.pos;
  while (r.pos < r.text.length && !isSpace(r.text[r.pos]) && !stops.includes(r.text[r.pos] as string)) r.pos++;
  return r.text.slice(start, r.pos);
}

export function parseFilterExpression(text: string): FilterExpr {
  const r: Reader = { text, pos: 0, tests: 0 };
  skipSpace(r);
  if (r.pos === text.length) throw bad('_filter: empty expression');
  const expr = expression(r, 0);
  skipSpace(r);
  if (r.pos < text.length) throw fail(r, `unexpected "${text.slice(r.pos, r.pos + 20)}"`);
  return expr;
}

/**
 * Terms joined by one kind of keyword. The grammar gives `and` and `or` no precedence; rather than pick one, a
 * mix without parentheses is refused, so that no search answers a question other than the one meant.
 */
function expression(r: Reader, depth: number): FilterExpr {
  if (depth > MAX_DEPTH) throw fail(r, `parentheses nest more than ${MAX_DEPTH} deep`);
  const parts = [term(r, depth)];
  let joiner: 'and' | 'or' | undefined;
  for (;;) {
    const save = r.pos;
    skipSpace(r);
    const w = word(r);
    const keyword = w.toLowerCase();
    const after = r.text[r.pos + w.length];
    if ((keyword !== 'and' && keyword !== 'or') || !(isSpace(after) || after === '(')) {
      r.pos = save;
      break;
    }
    if (joiner && joiner !== keyword) throw fail(r, `"and" and "or" mixed without parentheses`);
    joiner = keyword;
    r.pos += w.length;
    skipSpace(r);
    parts.push(term(r, depth));
  }
  return joiner ? { kind: joiner, parts } : (parts[0] as FilterExpr);
}

function term(r: Reader, depth: number): FilterExpr {
  skipSpace(r);
  if (r.text[r.pos] === '(') return group(r, depth);
  const w = word(r);
  if (w.toLowerCase() === 'not') {
    const save = r.pos;
    r.pos += w.length;
    skipSpace(r);
    if (r.text[r.pos] === '(') return { kind: 'not', expr: group(r, depth) };
    r.pos = save;
  }
  return test(r);
}

function group(r: Reader, depth: number): FilterExpr {
  r.pos++;
  const expr = expression(r, depth + 1);
  skipSpace(r);
  if (r.text[r.pos] !== ')') throw fail(r, 'expected ")"');
  r.pos++;
  return expr;
}

function test(r: Reader): FilterExpr {
  if (++r.tests > MAX_TESTS) throw fail(r, `more than ${MAX_TESTS} comparisons`);
  const at = r.pos;
  const path = until(r, '()');
  if (path === '') throw fail(r, 'expected a parameter');
  if (path.includes('[')) {
    r.pos = at;
    throw fail(r, `a [filter] on a parameter path (${path}) is not supported`);
  }
  if (!PATH.test(path)) {
    r.pos = at;
    throw fail(r, `"${path}" is not a parameter path`);
  }
  if (!skipSpace(r)) throw fail(r, `expected a space and an operator after ${path}`);
  const op = until(r, '()').toLowerCase();
  if (!OPS.has(op)) {
    r.pos -= op.length;
    throw fail(r, `"${op}" is not an operator (${[...OPS].join(', ')})`);
  }
  if (!skipSpace(r)) throw fail(r, `expected a space and a value after ${op}`);
  return { kind: 'test', path, op: op as FilterOp, value: compValue(r) };
}

/** A JSON string, or characters up to a space, `)` or `]`. */
function compValue(r: Reader): string {
  if (r.text[r.pos] !== '"') {
    const value = until(r, ')]');
    if (value === '') throw fail(r, 'expected a value');
    return value;
  }
  let end = r.pos + 1;
  while (end < r.text.length && r.text[end] !== '"') end += r.text[end] === '\\' ? 2 : 1;
  if (end >= r.text.length) throw fail(r, 'a string without its closing quote');
  let value: unknown;
  try {
    value = JSON.parse(r.text.slice(r.pos, end + 1));
  } catch {
    throw fail(r, 'not a valid JSON string');
  }
  r.pos = end + 1;
  if (value === '') throw fail(r, 'an empty string');
  return value as string;
}
