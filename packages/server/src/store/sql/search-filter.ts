import type { RangeCond, SearchFilter } from '../types.ts';
import { INDEX_TABLE, type SqlDialect } from './tables.ts';

/**
 * Compiles a parsed FHIR search into SQL. Every value is a bound parameter; identifiers (table names)
 * come only from fixed maps. Each filter selects ids inside one partition and type, so nothing of
 * another vault can ever match.
 */
export interface Sql {
  sql: string;
  params: unknown[];
}

/** State of one compilation: the engine, and a counter that keeps nested aliases unique. */
export interface Compilation {
  dialect: SqlDialect;
  n: number;
}

/** search.html#prefix on ranges: the resource value [lo, hi) against the search value [slo, shi). */
function rangeSql(c: RangeCond, lo = 'lo', hi = 'hi'): Sql {
  switch (c.prefix) {
    case 'eq':
      return { sql: `(${lo} >= ? AND ${hi} <= ?)`, params: [c.lo, c.hi] };
    case 'ne':
      return { sql: `NOT (${lo} >= ? AND ${hi} <= ?)`, params: [c.lo, c.hi] };
    case 'gt':
      return { sql: `${hi} > ?`, params: [c.hi] };
    case 'lt':
      return { sql: `${lo} < ?`, params: [c.lo] };
    case 'ge':
      return { sql: `(${hi} > ? OR (${lo} >= ? AND ${hi} <= ?))`, params: [c.hi, c.lo, c.hi] };
    case 'le':
      return { sql: `(${lo} < ? OR (${lo} >= ? AND ${hi} <= ?))`, params: [c.lo, c.lo, c.hi] };
    case 'sa':
      return { sql: `${lo} >= ?`, params: [c.hi] };
    case 'eb':
      return { sql: `${hi} <= ?`, params: [c.lo] };
    case 'po':
      return { sql: `(${lo} < ? AND ${hi} > ?)`, params: [c.hi, c.lo] };
    case 'ap': {
      // "approximately": within 10% of the value's distance to now, at least the value's own precision.
      const width = Math.max(c.hi - c.lo, Math.abs(Date.now() - c.lo) * 0.1);
      return { sql: `(${lo} < ? AND ${hi} > ?)`, params: [c.hi + width, c.lo - width] };
    }
  }
}

/** Numbers and quantities are points; the search value carries the implicit range of its precision. */
function pointSql(c: RangeCond, col = 'value'): Sql {
  switch (c.prefix) {
    case 'eq':
      return { sql: `(${col} >= ? AND ${col} < ?)`, params: [c.lo, c.hi] };
    case 'ne':
      return { sql: `NOT (${col} >= ? AND ${col} < ?)`, params: [c.lo, c.hi] };
    case 'gt':
    case 'sa':
      return { sql: `${col} > ?`, params: [(c.lo + c.hi) / 2] };
    case 'lt':
    case 'eb':
      return { sql: `${col} < ?`, params: [(c.lo + c.hi) / 2] };
    case 'ge':
      return { sql: `${col} >= ?`, params: [(c.lo + c.hi) / 2] };
    case 'le':
      return { sql: `${col} <= ?`, params: [(c.lo + c.hi) / 2] };
    case 'po':
      throw new Error('po (overlaps) compares periods, not numbers');
    case 'ap': {
      const v = (c.lo + c.hi) / 2;
      const d = Math.abs(v) * 0.1;
      return { sql: `(${col} >= ? AND ${col} <= ?)`, params: [v - d, v + d] };
    }
  }
}

const or = (parts: Sql[]): Sql => ({
  sql: parts.length ? `(${parts.map((p) => p.sql).join(' OR ')})` : 'FALSE',
  params: parts.flatMap((p) => p.params),
});

/**
 * How a filter restricts `alias`: `in` drives the query from the value index (`alias.id IN (…)`), `exists`
 * checks one candidate's own index rows (`EXISTS (… id = alias.id …)`). One filter drives; the rest check.
 * A driver given `checks` runs them inside its own subquery, on its index rows (`within`), so a resource row
 * is only read for a candidate that passed them: with code + subject, 30 candidates cost 30 covering index
 * checks and 15 row reads instead of 30 row reads and 30 checks. `rows`: the value index's own rows only.
 */
type Mode = 'in' | 'exists' | 'rows' | { within: string; checks: Sql[] };

function indexed(
  alias: string,
  partition: string,
  type: string,
  table: string,
  param: string,
  cond: Sql,
  negate: boolean,
  mode: Mode,
): Sql {
  if (mode === 'rows') {
    return {
      sql: `SELECT 1 FROM ${table} WHERE partition = ? AND type = ? AND param = ? AND ${cond.sql}`,
      params: [partition, type, param, ...cond.params],
    };
  }
  if (mode === 'exists') {
    return {
      sql: `${negate ? 'NOT ' : ''}EXISTS (SELECT 1 FROM ${table} WHERE partition = ? AND type = ? AND id = ${alias}.id AND param = ? AND ${cond.sql})`,
      params: [partition, type, param, ...cond.params],
    };
  }
  if (mode === 'in') {
    return {
      sql: `${alias}.id ${negate ? 'NOT ' : ''}IN (SELECT id FROM ${table} WHERE partition = ? AND type = ? AND param = ? AND ${cond.sql})`,
      params: [partition, type, param, ...cond.params],
    };
  }
  if (negate) throw new Error('a negated filter cannot drive with checks inside it');
  // The value's columns stay unqualified: they name this subquery's own rows, as the checks' name theirs.
  const d = mode.within;
  return {
    sql: `${alias}.id IN (SELECT ${d}.id FROM ${table} ${d} WHERE ${d}.partition = ? AND ${d}.type = ? AND ${d}.param = ? AND ${cond.sql}${mode.checks.map((c) => ` AND ${c.sql}`).join('')})`,
    params: [partition, type, param, ...cond.params, ...mode.checks.flatMap((c) => c.params)],
  };
}

export function compileFilter(
  f: SearchFilter,
  alias: string,
  partition: string,
  type: string,
  counter: Compilation,
  mode: Mode = 'in',
): Sql {
  switch (f.kind) {
    case 'id':
      // An empty list of ids (a `_list` without members of the type) matches nothing; `IN ()` is not SQL.
      if (f.ids.length === 0) return { sql: '1 = 0', params: [] };
      return { sql: `${alias}.id IN (${f.ids.map(() => '?').join(',')})`, params: f.ids };
    case 'lastUpdated':
      return or(
        f.values.map((c) =>
          rangeSql(
            c,
            counter.dialect.epochMs(`${alias}.last_updated`),
            `(${counter.dialect.epochMs(`${alias}.last_updated`)} + 1)`,
          ),
        ),
      );
    case 'token': {
      const cond = or(
        f.values.map((v) => {
          const parts: string[] = [];
          const params: unknown[] = [];
          if (v.system === null) parts.push('system IS NULL');
          else if (v.system !== undefined) {
            parts.push('system = ?');
            params.push(v.system);
          }
          if (v.code !== undefined) {
            parts.push('code = ?');
            params.push(v.code);
          }
          return { sql: parts.length ? `(${parts.join(' AND ')})` : 'TRUE', params };
        }),
      );
      return indexed(alias, partition, type, 'idx_token', f.param, cond, f.not === true, mode);
    }
    case 'token-text':
      return indexed(
        alias,
        partition,
        type,
        'idx_token',
        f.param,
        or(f.values.map((v) => ({ sql: "(text IS NOT NULL AND lower(text) LIKE ? ESCAPE '\\')", params: [`${v}%`] }))),
        false,
        mode,
      );
    case 'string': {
      const cond = or(
        f.values.map((v) => {
          if (f.mode === 'exact') return { sql: 'exact = ?', params: [v] };
          if (f.mode === 'contains') return { sql: "norm LIKE ? ESCAPE '\\'", params: [`%${v}%`] };
          if (f.mode === 'equal') return { sql: 'norm = ?', params: [v] };
          if (f.mode === 'suffix') return { sql: "norm LIKE ? ESCAPE '\\'", params: [`%${v}`] };
          return { sql: '(norm >= ? AND norm < ?)', params: [v, `${v}\u{10ffff}`] };
        }),
      );
      return indexed(alias, partition, type, 'idx_string', f.param, cond, false, mode);
    }
    case 'reference': {
      const cond = or(
        f.values.map((v) => {
          if (v.url !== undefined) return { sql: 'url = ?', params: [v.url] };
          if (v.type !== undefined && v.id === undefined) return { sql: 'target_type = ?', params: [v.type] };
          if (v.type !== undefined) return { sql: '(target_id = ? AND target_type = ?)', params: [v.id, v.type] };
          return { sql: 'target_id = ?', params: [v.id] };
        }),
      );
      return indexed(alias, partition, type, 'idx_reference', f.param, cond, false, mode);
    }
    case 'date':
      return indexed(alias, partition, type, 'idx_date', f.param, or(f.values.map((c) => rangeSql(c))), false, mode);
    case 'number':
      return indexed(alias, partition, type, 'idx_number', f.param, or(f.values.map((c) => pointSql(c))), false, mode);
    case 'quantity':
      return indexed(
        alias,
        partition,
        type,
        'idx_quantity',
        f.param,
        or(
          f.values.map((c) => {
            const p = pointSql(c);
            const extra: string[] = [];
            const params = [...p.params];
            if (c.system !== undefined) {
              extra.push('system = ?');
              params.push(c.system);
            }
            if (c.code !== undefined) {
              extra.push('code = ?');
              params.push(c.code);
            }
            return { sql: `(${[p.sql, ...extra].join(' AND ')})`, params };
          }),
        ),
        false,
        mode,
      );
    case 'uri': {
      const cond = or(
        f.values.map((v) => {
          if (f.mode === 'below')
            return {
              sql: "(value = ? OR value LIKE ? ESCAPE '\\')",
              params: [v, `${v.replace(/[\\%_]/g, '\\$&').replace(/\/$/, '')}/%`],
            };
          if (f.mode === 'above')
            return {
              sql: "(? = value OR ? LIKE replace(replace(replace(value, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '/%' ESCAPE '\\')",
              params: [v, v],
            };
          return { sql: 'value = ?', params: [v] };
        }),
      );
      return indexed(alias, partition, type, 'idx_uri', f.param, cond, false, mode);
    }
    case 'composite':
      return or(
        f.values.map((components) => {
          const joins: string[] = [];
          const conds: string[] = [];
          const params: unknown[] = [partition, type, f.param];
          components.forEach((c, k) => {
            const a = `k${k}`;
            if (k > 0) {
              joins.push(
                `JOIN idx_composite ${a} ON ${a}.partition = k0.partition AND ${a}.type = k0.type AND ${a}.id = k0.id AND ${a}.param = k0.param AND ${a}.row = k0.row AND ${a}.comp = ${k}`,
              );
            }
            if (c.kind === 'token') {
              if (c.system === null) conds.push(`${a}.system IS NULL`);
              else if (c.system !== undefined) {
                conds.push(`${a}.system = ?`);
                params.push(c.system);
              }
              if (c.code !== undefined) {
                conds.push(`${a}.code = ?`);
                params.push(c.code);
              }
            } else if (c.kind === 'number') {
              const p = pointSql(c.range, `${a}.num`);
              conds.push(p.sql);
              params.push(...p.params);
              if (c.system !== undefined) {
                conds.push(`${a}.system = ?`);
                params.push(c.system);
              }
              if (c.code !== undefined) {
                conds.push(`${a}.code = ?`);
                params.push(c.code);
              }
            } else {
              const r = rangeSql(c.range, `${a}.lo`, `${a}.hi`);
              conds.push(r.sql);
              params.push(...r.params);
            }
          });
          return {
            sql: `${alias}.id IN (SELECT k0.id FROM idx_composite k0 ${joins.join(' ')} WHERE k0.partition = ? AND k0.type = ? AND k0.param = ? AND k0.comp = 0${conds.length ? ` AND ${conds.join(' AND ')}` : ''})`,
            params,
          };
        }),
      );
    case 'missing': {
      const table = INDEX_TABLE[f.index];
      return {
        sql: `${alias}.id ${f.missing ? 'NOT ' : ''}IN (SELECT id FROM ${table} WHERE partition = ? AND type = ? AND param = ?)`,
        params: [partition, type, f.param],
      };
    }
    case 'chain': {
      const parts = f.targetTypes.map((targetType) => {
        const t = `c${++counter.n}`;
        const inner = compileFilter(f.filter, t, partition, targetType, counter);
        return {
          sql: `${alias}.id IN (SELECT x.id FROM idx_reference x WHERE x.partition = ? AND x.type = ? AND x.param = ? AND x.target_type = ? AND x.target_id IN (SELECT ${t}.id FROM resources ${t} WHERE ${t}.partition = ? AND ${t}.type = ? AND ${t}.content IS NOT NULL AND ${inner.sql}))`,
          params: [partition, type, f.param, targetType, partition, targetType, ...inner.params],
        };
      });
      return or(parts);
    }
    case 'proxy': {
      // Correlated with the candidate, both steps on the owner index: a read by id pays two probes, not the
      // compartment of every linked type (which a chain's `IN (SELECT …)` would list).
      const x = `p${++counter.n}`;
      const y = `q${counter.n}`;
      const marks = (n: number) => Array.from({ length: n }, () => '?').join(',');
      const targets = or(
        f.values.map((v) => ({ sql: `(${y}.target_id = ? AND ${y}.target_type = ?)`, params: [v.id, v.type] })),
      );
      const links = or(
        f.links.map((l) => ({
          sql: `(${y}.type IN (${marks(l.types.length)}) AND ${y}.param IN (${marks(l.params.length)}))`,
          params: [...l.types, ...l.params],
        })),
      );
      return {
        sql: `EXISTS (SELECT 1 FROM idx_reference ${x} WHERE ${x}.partition = ? AND ${x}.type = ? AND ${x}.id = ${alias}.id AND ${x}.param = ? AND EXISTS (SELECT 1 FROM idx_reference ${y} WHERE ${y}.partition = ? AND ${y}.type = ${x}.target_type AND ${y}.id = ${x}.target_id AND ${targets.sql} AND ${links.sql}))`,
        params: [partition, type, f.param, partition, ...targets.params, ...links.params],
      };
    }
    case 'has': {
      const s = `h${++counter.n}`;
      const inner = compileFilter(f.filter, s, partition, f.sourceType, counter);
      return {
        sql: `${alias}.id IN (SELECT x.target_id FROM idx_reference x WHERE x.partition = ? AND x.type = ? AND x.param = ? AND x.target_type = ? AND x.id IN (SELECT ${s}.id FROM resources ${s} WHERE ${s}.partition = ? AND ${s}.type = ? AND ${s}.content IS NOT NULL AND ${inner.sql}))`,
        params: [partition, f.sourceType, f.param, type, partition, f.sourceType, ...inner.params],
      };
    }
    case 'or':
      return or(f.filters.map((x) => compileFilter(x, alias, partition, type, counter)));
    case 'not': {
      const inner = compileFilter(f.filter, alias, partition, type, counter);
      return { sql: `NOT (${inner.sql})`, params: inner.params };
    }
    case 'and': {
      const parts = f.filters.map((x) => compileFilter(x, alias, partition, type, counter));
      return {
        sql: parts.length ? `(${parts.map((p) => p.sql).join(' AND ')})` : 'TRUE',
        params: parts.flatMap((p) => p.params),
      };
    }
  }
}
