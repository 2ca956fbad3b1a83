import type { SearchFilter } from '../types.ts';
import { type Compilation, compileFilter, type Sql } from './search-filter.ts';

// Which condition of a search drives its plan (its index lists the candidates), and where the others are checked.

/** Filters answered from one index table of the resource's own rows (`indexed`): they can check inside a driver. */
const INDEXED = new Set<SearchFilter['kind']>([
  'token',
  'token-text',
  'string',
  'reference',
  'date',
  'number',
  'quantity',
  'uri',
]);

/** Which filter should drive: ids and references are usually the most selective, negations the least. */
function selectivity(f: SearchFilter): number {
  switch (f.kind) {
    case 'id':
      return 0;
    case 'reference':
    case 'chain':
    case 'has':
      return 1;
    case 'token':
      return f.not ? 9 : 2;
    case 'not':
      return 9;
    case 'string':
    case 'uri':
      return 3;
    case 'missing':
      return f.missing ? 9 : 6;
    default:
      return 5;
  }
}

const driverOf = (filters: SearchFilter[]) => [...filters].sort((a, b) => selectivity(a) - selectivity(b))[0];

/**
 * The index rows of the filter that would drive `compileAll`'s plan (`SELECT 1 FROM idx_… WHERE …`), when it is
 * an index condition: what a search counts, capped, to learn whether its driver matches a large share of a type.
 */
export function driverRows(filters: SearchFilter[], partition: string, type: string, counter: Compilation) {
  const driver = driverOf(filters);
  if (!driver || !INDEXED.has(driver.kind) || (driver.kind === 'token' && driver.not)) return undefined;
  return compileFilter(driver, 'r', partition, type, counter, 'rows');
}

/** AND of filters on `alias`: the most selective one drives, the others are checked per candidate. */
export function compileAll(
  filters: SearchFilter[],
  alias: string,
  partition: string,
  type: string,
  counter: Compilation,
): Sql[] {
  const driver = driverOf(filters);
  const checks = filters.filter((f) => f !== driver && INDEXED.has(f.kind));
  const nest = counter.dialect.checksInDriver && driver && INDEXED.has(driver.kind);
  if (!nest || (driver.kind === 'token' && driver.not) || checks.length === 0) {
    return filters.map((f) => compileFilter(f, alias, partition, type, counter, f === driver ? 'in' : 'exists'));
  }
  const within = `d${++counter.n}`;
  const inner = checks.map((f) => compileFilter(f, within, partition, type, counter, 'exists'));
  return [
    compileFilter(driver, alias, partition, type, counter, { within, checks: inner }),
    ...filters
      .filter((f) => f !== driver && !INDEXED.has(f.kind))
      .map((f) => compileFilter(f, alias, partition, type, counter, 'exists')),
  ];
}
