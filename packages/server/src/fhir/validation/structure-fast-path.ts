import {
  type Constraint,
  evalFhirPathTyped,
  fhirTypeToJsType,
  type InternalSchemaElement,
  type InternalTypeSchema,
  parseFhirPath,
  type TypedValue,
  toTypedValue,
  tryGetDataType,
  UCUM,
  validationRegexes,
} from '@medplum/core';

/*
 * @medplum/core's validateResource visits every element its schema defines for every object, present or not (an
 * ExplanationOfBenefit costs ≈ 1.5 ms). This pass visits only the keys a resource has and answers one question: would
 * medplum find no error? It mirrors each of medplum's error checks (typeschema/validation.ts, 4.x) on medplum's own
 * parsed schemas and FHIRPath engine: unknown and null properties, cardinality, array-ness, primitive JS types and
 * formats, empty values, required elements, and the error constraints medplum evaluates (the resource's own, then
 * each element's on each value). Anything it cannot prove — primitive extensions (`_x`), a choice given twice,
 * empty strings, slicing/pattern/fixed, a failing constraint — answers false, and medplum validates the resource in
 * full and words the error. So it may send a valid resource the slow way, never pass an invalid one
 * (validation-fast-path.test.ts checks that against medplum on the fixtures and thousands of mutations of them).
 */

type Atom = ReturnType<typeof parseFhirPath>;

/** The constraint keys medplum's validator does not evaluate (validation.ts `skippedConstraintKeys`). */
const SKIPPED = new Set(['ele-1', 'dom-3', 'org-1', 'sdf-19']);
const MAX_STRING = 1024 * 1024;
const UCUM_VALUE = toTypedValue(UCUM);

interface Slot {
  /** The schema's element name (`value[x]` for every `valueX` key), to see a choice given twice. */
  element: string;
  type: string;
  min: number;
  max: number;
  isArray: boolean;
  constraints: Atom[];
  primitive: 'string' | 'number' | 'boolean' | undefined;
  format: RegExp | undefined;
}

interface Shape {
  slots: Map<string, Slot>;
  required: string[];
  /** The type's own constraints: medplum evaluates them on the resource being validated only. */
  constraints: Atom[];
}

interface Walk {
  root: TypedValue;
  /** Innermost resource first: `%resource` of a constraint inside a contained resource is that resource. */
  resources: TypedValue[];
}

const shapes = new WeakMap<InternalTypeSchema, Shape | null>();
const atoms = new Map<string, Atom>();

function compileConstraints(constraints: Constraint[] | undefined): Atom[] {
  const out: Atom[] = [];
  for (const c of constraints ?? []) {
    if (c.severity !== 'error' || SKIPPED.has(c.key)) continue;
    let atom = atoms.get(c.expression);
    if (!atom) {
      atom = parseFhirPath(c.expression);
      atoms.set(c.expression, atom);
    }
    out.push(atom);
  }
  return out;
}

function slot(element: string, type: string, el: InternalSchemaElement, constraints: Atom[]): Slot {
  const primitive = (fhirTypeToJsType as Record<string, 'string' | 'number' | 'boolean'>)[type];
  return {
    element,
    type,
    min: el.min,
    max: el.max,
    isArray: el.isArray === true,
    constraints,
    primitive,
    format: primitive === 'string' ? validationRegexes[type] : undefined,
  };
}

/** The shape of a type, or null when it has something this pass does not mirror (medplum then decides). */
function shapeOf(schema: InternalTypeSchema): Shape | null {
  let shape = shapes.get(schema);
  if (shape !== undefined) return shape;
  shape = compile(schema);
  shapes.set(schema, shape);
  return shape;
}

function compile(schema: InternalTypeSchema): Shape | null {
  const slots = new Map<string, Slot>();
  const required: string[] = [];
  for (const [name, el] of Object.entries(schema.elements)) {
    // medplum reads a property by the last segment of the element's path: only mirror where that is the key.
    if (el.path.slice(el.path.lastIndexOf('.') + 1) !== name) return null;
    if (el.slicing || el.pattern !== undefined || el.fixed !== undefined || !el.type?.length) return null;
    const constraints = compileConstraints(el.constraints);
    // A choice is one key per type (valueQuantity, valueString…); anything else has exactly one type.
    const keyed: [string, string][] = name.endsWith('[x]')
      ? el.type.map((t) => [name.slice(0, -3) + t.code.charAt(0).toUpperCase() + t.code.slice(1), t.code])
      : el.type.map((t) => [name, t.code]);
    if (!name.endsWith('[x]') && keyed.length !== 1) return null;
    for (const [key, type] of keyed) {
      if (slots.has(key) || type === 'undefined') return null;
      slots.set(key, slot(name, type, el, constraints));
    }
    if (el.min > 0) required.push(name);
  }
  return { slots, required, constraints: compileConstraints(schema.constraints) };
}

function holds(constraints: Atom[], value: TypedValue, walk: Walk): boolean {
  if (constraints.length === 0) return true;
  const variables: Record<string, TypedValue> = {
    '%context': value,
    '%ucum': UCUM_VALUE,
    '%resource': walk.resources[walk.resources.length - 1] ?? walk.root,
    '%rootResource': walk.root,
  };
  try {
    for (const atom of constraints) {
      const result = evalFhirPathTyped(atom, [value], variables);
      if (result.length !== 1 || result[0]?.value !== true) return false;
    }
    return true;
  } catch {
    // medplum reports an expression that throws as an error issue.
    return false;
  }
}

function primitiveConforms(value: unknown, s: Slot): boolean {
  if (typeof value !== s.primitive) return false;
  if (s.primitive === 'string') {
    const str = value as string;
    // medplum takes '' for an absent element, and whitespace-only strings are errors: both go its way.
    if (str.trim() === '') return false;
    if (str.length > MAX_STRING) return s.type === 'base64Binary' && isLargeBase64(str);
    return s.format === undefined || s.format.exec(str) !== null;
  }
  if (s.primitive === 'number') {
    const n = value as number;
    if (!Number.isFinite(n)) return false;
    if ((s.type === 'integer' || s.type === 'positiveInt' || s.type === 'unsignedInt') && !Number.isInteger(n)) {
      return false;
    }
    if (s.type === 'positiveInt' && n <= 0) return false;
    if (s.type === 'unsignedInt' && n < 0) return false;
  }
  return true;
}

/**
 * R4 limits strings to 1 MB, not base64Binary (datatypes.html#base64Binary: "no specified upper limit"); medplum
 * applies the limit to both, and its base64 pattern (groups of four, repeated) overflows the stack on a few MB.
 * The same pattern here, linear: the characters, then the padding, in a length of whole groups.
 */
function isLargeBase64(str: string): boolean {
  return str.length % 4 === 0 && /^[A-Za-z\d+/]*(?:[A-Za-z\d+/]{2}==|[A-Za-z\d+/]{3}=)?$/.test(str);
}

/**
 * Whether medplum's 1 MB issue at `expression` (`DocumentReference.content[0].attachment.data`) is on a
 * base64Binary value, where the limit is not R4's (isLargeBase64), and whether that value is valid base64 —
 * undefined when the element is another type (a string, to which the limit applies).
 */
export function largeBase64At(resource: Record<string, unknown>, expression: string): 'valid' | 'invalid' | undefined {
  const steps = expression.split('.');
  if (steps.shift() !== resource.resourceType) return undefined;
  let schema = tryGetDataType(resource.resourceType as string);
  let value: unknown = resource;
  for (const [i, step] of steps.entries()) {
    const [, name, index] = /^([^[]+)(?:\[(\d+)\])?$/.exec(step) ?? [];
    const s = schema && name ? shapeOf(schema)?.slots.get(name) : undefined;
    if (!s || typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<string, unknown>)[name as string];
    if (index !== undefined) value = Array.isArray(value) ? value[Number(index)] : undefined;
    if (i === steps.length - 1) {
      if (s.type !== 'base64Binary' || typeof value !== 'string') return undefined;
      return isLargeBase64(value) ? 'valid' : 'invalid';
    }
    schema = tryGetDataType(s.type);
  }
  return undefined;
}

function valueConforms(value: unknown, s: Slot, walk: Walk): boolean {
  if (value === null || value === undefined) return false;
  if (s.primitive !== undefined) {
    return primitiveConforms(value, s) && holds(s.constraints, { type: s.type, value }, walk);
  }
  if (typeof value !== 'object' || Array.isArray(value)) return false;
  const obj = value as Record<string, unknown>;
  const isResource = s.type === 'Resource';
  const type = isResource ? obj.resourceType : s.type;
  if (typeof type !== 'string') return false;
  const schema = tryGetDataType(type);
  if (!schema || (isResource && schema.kind !== 'resource')) return false;
  const shape = shapeOf(schema);
  if (!shape) return false;
  const typed = { type, value: obj };
  if (!holds(s.constraints, typed, walk)) return false;
  if (!isResource) return objectConforms(obj, shape, false, walk);
  walk.resources.push(toTypedValue(obj));
  const ok = objectConforms(obj, shape, true, walk);
  walk.resources.pop();
  return ok;
}

function propertyConforms(value: unknown, s: Slot, walk: Walk): boolean {
  if (!s.isArray) return !Array.isArray(value) && s.min <= 1 && s.max >= 1 && valueConforms(value, s, walk);
  if (!Array.isArray(value) || value.length === 0 || value.length < s.min || value.length > s.max) return false;
  for (const item of value) if (!valueConforms(item, s, walk)) return false;
  return true;
}

function objectConforms(obj: Record<string, unknown>, shape: Shape, isResource: boolean, walk: Walk): boolean {
  const keys = Object.keys(obj);
  // medplum counts an empty object as absent, and an empty complex value is its error.
  if (keys.length === 0) return false;
  const seen = new Set<string>();
  for (const key of keys) {
    if (key === 'resourceType') {
      if (!isResource) return false;
      continue;
    }
    const s = shape.slots.get(key);
    if (!s || seen.has(s.element)) return false;
    seen.add(s.element);
    if (!propertyConforms(obj[key], s, walk)) return false;
  }
  for (const element of shape.required) if (!seen.has(element)) return false;
  return true;
}

/**
 * True when @medplum/core's validateResource would report no error for this resource; false when it would, or
 * when this pass cannot tell (then ask medplum).
 */
export function conformsFast(resource: Record<string, unknown>): boolean {
  if (typeof resource.resourceType !== 'string') return false;
  const root = toTypedValue(resource);
  if (root.type !== resource.resourceType) return false;
  const schema = tryGetDataType(root.type);
  if (schema?.kind !== 'resource') return false;
  const shape = shapeOf(schema);
  if (!shape) return false;
  const walk: Walk = { root, resources: [root] };
  return holds(shape.constraints, root, walk) && objectConforms(resource, shape, true, walk);
}
