import type { CompositeCond, Prefix, RangeCond, TokenCond } from '../../store/types.ts';
import { FhirError } from '../errors.ts';
import { dateRange, normalizeString, relativeReference } from './values.ts';

/** Where a search runs: its vault base (to make absolute references relative) and strictness. */
export interface ParseContext {
  /** Absolute base of this vault, to turn absolute references into relative ones. */
  base: string;
  strict: boolean;
  /** The codes of the ValueSets `:in` / `:not-in` name, looked up beforehand (search/value-set-in.ts). */
  valueSets?: Map<string, TokenCond[]>;
  /** The members of the Lists `_list` names, looked up beforehand (search/list-members.ts); top level only. */
  lists?: Map<string, string[]>;
  /** The codes `:below` / `:above` name, read beforehand (search/code-hierarchy.ts); top level only. */
  hierarchies?: Map<string, TokenCond[]>;
}

/** Parsing of single search values (search.html#escaping, #prefix, #date, #number, #composite). */

export const MAX_VALUES = 100;
const PREFIXES = new Set(['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap']);
export const bad = (message: string) => new FhirError(400, 'invalid', message);

/** Splits on commas not escaped with a backslash, and unescapes \, \| \$ \\ (search.html#escaping). */
export function splitValues(raw: string): string[] {
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
export function splitPipe(v: string): string[] {
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
export const unescapeValue = (v: string) => v.replace(/\\(.)/g, '$1');

export function prefixOf(v: string): { prefix: Prefix; rest: string } {
  const p = v.slice(0, 2);
  if (PREFIXES.has(p) && v.length > 2 && !/^[a-z]/.test(v.slice(2, 3)))
    return { prefix: p as Prefix, rest: v.slice(2) };
  return { prefix: 'eq', rest: v };
}

export function parseDate(v: string, name: string): RangeCond {
  const { prefix, rest } = prefixOf(v);
  const r = dateRange(rest);
  if (!r) throw bad(`${name}: "${v}" is not a FHIR date (e.g. 2024, 2024-05-01, ge2024-05-01T10:00:00Z)`);
  return { prefix, lo: r[0], hi: r[1] };
}

export function parseNumber(v: string, name: string): RangeCond {
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

/** Splits a composite value at unescaped $ (search.html#composite). */
export function splitDollar(v: string): string[] {
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

export function compositeComponent(code: string, type: string, value: string, ctx: ParseContext): CompositeCond {
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
