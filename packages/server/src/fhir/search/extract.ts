import { createRequire } from 'node:module';
import type { IndexRows } from '../../store/types.ts';
import { type Accessor, compilePath, compileRelative } from './accessor.ts';
import { SEARCH_PARAMETERS, type SearchParamDef } from './definitions.ts';
import { dateRange, FAR_FUTURE, normalizeString, relativeReference } from './values.ts';

const require = createRequire(import.meta.url);
const fhirpath = require('fhirpath') as {
  compile(expression: string, model: unknown): (resource: unknown) => unknown[];
};
const model = require('fhirpath/fhir-context/r4') as unknown;

/** One union part of a composite component: on the resource itself (`%resource.…`) or on each occurrence. */
type ComponentPart = { onResource: boolean; fn: (node: unknown) => unknown[] };

type Compiled = {
  code: string;
  def: SearchParamDef;
  branches: {
    fn: (r: unknown) => unknown[];
    expression: string;
    targetType?: string;
    /** Composite components as plain accessors, when every part of every component compiles. */
    components?: ComponentPart[][];
  }[];
};

function componentAccessors(
  type: string,
  def: SearchParamDef,
  base: Accessor | undefined,
): ComponentPart[][] | undefined {
  if (!base || !def.components) return undefined;
  const out: ComponentPart[][] = [];
  for (const component of def.components) {
    const parts: ComponentPart[] = [];
    const union = unionParts(component.expression);
    // FHIRPath's `|` removes duplicates: only a union compileRelative proves exact is compiled, as one part.
    if (union.length !== 1) {
      const fn = union.some((p) => p.startsWith('%resource.')) ? undefined : compileRelative(base, union.join(' | '));
      if (!fn) return undefined;
      out.push([{ onResource: false, fn }]);
      continue;
    }
    for (const part of union) {
      const onResource = part.startsWith('%resource.');
      const fn = onResource ? compilePath(`${type}.${part.slice('%resource.'.length)}`) : compileRelative(base, part);
      if (!fn) return undefined;
      parts.push({ onResource, fn });
    }
    out.push(parts);
  }
  return out;
}
const compiled = new Map<string, Compiled[]>();

function compiledFor(type: string): Compiled[] {
  let list = compiled.get(type);
  if (!list) {
    list = Object.entries(SEARCH_PARAMETERS[type] ?? {}).map(([code, def]) => ({
      code,
      def,
      branches: def.branches.map((b) => {
        const plain = compilePath(b.expression);
        return {
          fn: plain ?? fhirpath.compile(b.expression, model),
          expression: b.expression,
          targetType: b.targetType,
          components: def.type === 'composite' ? componentAccessors(type, def, plain) : undefined,
        };
      }),
    }));
    compiled.set(type, list);
  }
  return list;
}

const CONTACT_SYSTEMS = new Set(['phone', 'fax', 'email', 'pager', 'url', 'sms', 'other']);
type Obj = Record<string, unknown>;
const str = (v: unknown): string | null => (typeof v === 'string' && v.length > 0 ? v : null);

function tokens(param: string, v: unknown, out: IndexRows['token']): void {
  if (typeof v === 'string' || typeof v === 'boolean' || typeof v === 'number') {
    out.push({ param, system: null, code: String(v), text: null });
    return;
  }
  if (typeof v !== 'object' || v === null) return;
  const o = v as Obj;
  if (Array.isArray(o.coding) || typeof o.text === 'string') {
    const text = str(o.text);
    for (const c of (o.coding as Obj[] | undefined) ?? []) {
      out.push({ param, system: str(c.system), code: str(c.code), text: text ?? str(c.display) });
    }
    if (text && !(o.coding as unknown[] | undefined)?.length) out.push({ param, system: null, code: null, text });
    return;
  }
  if ('code' in o) {
    out.push({ param, system: str(o.system), code: str(o.code), text: str(o.display) });
    return;
  }
  if ('value' in o) {
    const isContact = typeof o.system === 'string' && CONTACT_SYSTEMS.has(o.system) && !('assigner' in o);
    const type = o.type as Obj | undefined;
    out.push({ param, system: isContact ? null : str(o.system), code: str(o.value), text: str(type?.text) });
  }
}

/**
 * An Identifier's type with its value, for the `:of-type` modifier (R4 search.html#modifiers): a token row of
 * `{param}:of-type` whose system is the type's `system|code` and whose code is the value.
 */
function identifierTypes(param: string, v: unknown, out: IndexRows['token']): void {
  if (typeof v !== 'object' || v === null) return;
  const o = v as Obj;
  const value = str(o.value);
  const codings = (o.type as Obj | undefined)?.coding;
  if (!value || !Array.isArray(codings)) return;
  for (const c of codings as Obj[]) {
    const system = str(c?.system);
    const code = str(c?.code);
    if (system && code) out.push({ param: `${param}:of-type`, system: `${system}|${code}`, code: value, text: null });
  }
}

function strings(param: string, v: unknown, out: IndexRows['string']): void {
  const add = (s: unknown) => {
    if (typeof s === 'string' && s.length > 0) out.push({ param, norm: normalizeString(s), exact: s });
  };
  if (typeof v === 'string') {
    add(v);
    return;
  }
  if (typeof v !== 'object' || v === null) return;
  const o = v as Obj;
  for (const key of ['text', 'family', 'city', 'district', 'state', 'postalCode', 'country']) add(o[key]);
  for (const key of ['given', 'prefix', 'suffix', 'line'])
    for (const s of (o[key] as unknown[] | undefined) ?? []) add(s);
}

function references(param: string, v: unknown, targetType: string | undefined, out: IndexRows['reference']): void {
  const ref = typeof v === 'string' ? v : typeof v === 'object' && v !== null ? (v as Obj).reference : undefined;
  if (typeof ref !== 'string' || ref.startsWith('#')) return;
  const rel = relativeReference(ref);
  if (targetType && rel?.type !== targetType) return;
  if (rel) out.push({ param, targetType: rel.type, targetId: rel.id, url: null });
  else out.push({ param, targetType: null, targetId: null, url: ref });
}

/**
 * Reference.identifier, for the `:identifier` modifier (R4 search.html#modifiers): a token row of
 * `{param}:identifier`. A parameter limited to one target type (Observation `patient`) takes only references
 * that say they are of that type, by `type` or by their literal reference.
 */
function referenceIdentifiers(param: string, v: unknown, targetType: string | undefined, out: IndexRows['token']) {
  if (typeof v !== 'object' || v === null) return;
  const o = v as Obj;
  if (typeof o.identifier !== 'object' || o.identifier === null) return;
  if (targetType) {
    const type =
      typeof o.type === 'string'
        ? o.type.replace(/^http:\/\/hl7\.org\/fhir\/StructureDefinition\//, '')
        : typeof o.reference === 'string'
          ? relativeReference(o.reference)?.type
          : undefined;
    if (type !== targetType) return;
  }
  tokens(`${param}:identifier`, o.identifier, out);
}

function dates(param: string, v: unknown, out: IndexRows['date']): void {
  if (typeof v === 'string') {
    const r = dateRange(v);
    if (r) out.push({ param, lo: r[0], hi: r[1] });
    return;
  }
  if (typeof v !== 'object' || v === null) return;
  const o = v as Obj;
  if ('start' in o || 'end' in o) {
    const lo = typeof o.start === 'string' ? dateRange(o.start)?.[0] : undefined;
    const hi = typeof o.end === 'string' ? dateRange(o.end)?.[1] : undefined;
    out.push({ param, lo: lo ?? -FAR_FUTURE, hi: hi ?? FAR_FUTURE });
    return;
  }
  for (const e of (o.event as unknown[] | undefined) ?? []) dates(param, e, out);
  const bounds = (o.repeat as Obj | undefined)?.boundsPeriod;
  if (bounds) dates(param, bounds, out);
}

function quantities(param: string, v: unknown, rows: IndexRows): void {
  if (typeof v === 'number') {
    rows.number.push({ param, value: v });
    return;
  }
  if (typeof v !== 'object' || v === null) return;
  const o = v as Obj;
  if (typeof o.value === 'number') {
    rows.quantity.push({ param, value: o.value, system: str(o.system), code: str(o.code) ?? str(o.unit) });
  } else if ('low' in o || 'high' in o) {
    for (const b of [o.low, o.high]) quantities(param, b, rows);
  }
}

function emptyRows(): IndexRows {
  return { token: [], string: [], reference: [], date: [], number: [], quantity: [], uri: [], composite: [] };
}

const compiledExpressions = new Map<string, (r: unknown) => unknown[]>();
function compiledExpression(expression: string): (r: unknown) => unknown[] {
  let fn = compiledExpressions.get(expression);
  if (!fn) {
    if (compiledExpressions.size > 5000) compiledExpressions.clear();
    fn = fhirpath.compile(expression, model);
    compiledExpressions.set(expression, fn);
  }
  return fn;
}

/** Splits a FHIRPath union at top-level pipes. */
function unionParts(expression: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) {
      parts.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(expression.slice(start).trim());
  return parts;
}

/**
 * Composite parameters (search.html#composite): each occurrence of the base element is one `row`, and each
 * component expression is evaluated on that same occurrence, so `code$value` pairs never mix across occurrences.
 * A search gives every component, so an occurrence lacking one (an Observation's code-value-concept when its
 * value is a Quantity) can never match: it gets no rows — half of a vital sign's composite rows were such.
 */
function composites(
  resource: Record<string, unknown>,
  param: string,
  def: SearchParamDef,
  branch: Compiled['branches'][number],
  occurrences: unknown[],
  out: IndexRows['composite'],
): void {
  const type = resource.resourceType as string;
  const components = def.components ?? [];
  for (let row = 0; row < Math.min(occurrences.length, 100); row++) {
    const rows: IndexRows['composite'] = [];
    const found = new Set<number>();
    const push = (r: IndexRows['composite'][number]) => {
      rows.push(r);
      found.add(r.comp);
    };
    components.forEach((component, comp) => {
      let values: unknown[];
      const plain = branch.components?.[comp];
      if (plain) {
        values = plain.flatMap((part) => part.fn(part.onResource ? resource : occurrences[row]));
      } else {
        const expression = unionParts(component.expression)
          .map((part) =>
            part.startsWith('%resource.')
              ? `${type}.${part.slice('%resource.'.length)}`
              : `(${branch.expression})[${row}].${part}`,
          )
          .join(' | ');
        try {
          values = compiledExpression(expression)(resource);
        } catch {
          return;
        }
      }
      const empty = { param, row, comp, system: null, code: null, num: null, lo: null, hi: null };
      for (const v of values) {
        switch (component.type) {
          case 'token': {
            const t: IndexRows['token'] = [];
            tokens(param, v, t);
            for (const x of t) push({ ...empty, system: x.system, code: x.code });
            break;
          }
          case 'quantity':
          case 'number': {
            const q = emptyRows();
            quantities(param, v, q);
            for (const x of q.quantity) push({ ...empty, num: x.value, system: x.system, code: x.code });
            for (const x of q.number) push({ ...empty, num: x.value });
            break;
          }
          case 'date': {
            const d: IndexRows['date'] = [];
            dates(param, v, d);
            for (const x of d) push({ ...empty, lo: x.lo, hi: x.hi });
            break;
          }
          case 'reference': {
            const r: IndexRows['reference'] = [];
            references(param, v, undefined, r);
            for (const x of r) push({ ...empty, system: x.targetType, code: x.targetId ?? x.url });
            break;
          }
          default:
            if (typeof v === 'string') push({ ...empty, code: normalizeString(v) });
        }
      }
    });
    if (found.size === components.length) out.push(...rows);
  }
}

/**
 * Search index rows for a resource, from the official R4 SearchParameter expressions evaluated with
 * fhirpath.js.
 */
export function extractIndex(resource: Record<string, unknown>): IndexRows {
  const rows = emptyRows();
  for (const { code, def, branches } of compiledFor(resource.resourceType as string)) {
    for (const b of branches) {
      let values: unknown[];
      try {
        values = b.fn(resource);
      } catch {
        continue; // an expression that cannot evaluate on this resource yields no index values
      }
      for (const v of values) {
        switch (def.type) {
          case 'token':
            tokens(code, v, rows.token);
            identifierTypes(code, v, rows.token);
            break;
          case 'string':
            strings(code, v, rows.string);
            break;
          case 'reference':
            references(code, v, b.targetType, rows.reference);
            referenceIdentifiers(code, v, b.targetType, rows.token);
            break;
          case 'date':
            dates(code, v, rows.date);
            break;
          case 'number':
          case 'quantity':
            if (def.type === 'number' && typeof v === 'number') rows.number.push({ param: code, value: v });
            else quantities(code, v, rows);
            break;
          case 'uri':
            if (typeof v === 'string') rows.uri.push({ param: code, value: v });
            break;
        }
      }
      if (def.type === 'composite') composites(resource, code, def, b, values, rows.composite);
    }
  }
  return rows;
}

/** The reference index rows of only the named parameters: what a read's audit event needs, at a fraction of the cost. */
export function extractReferences(
  resource: Record<string, unknown>,
  params: readonly string[],
): IndexRows['reference'] {
  const out: IndexRows['reference'] = [];
  for (const { code, def, branches } of compiledFor(resource.resourceType as string)) {
    if (def.type !== 'reference' || !params.includes(code)) continue;
    for (const b of branches) {
      let values: unknown[];
      try {
        values = b.fn(resource);
      } catch {
        continue;
      }
      for (const v of values) references(code, v, b.targetType, out);
    }
  }
  return out;
}
