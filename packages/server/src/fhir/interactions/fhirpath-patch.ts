import { createRequire } from 'node:module';
import { FhirError } from '../errors.ts';
import { elementDefinition } from '../validation/validate.ts';

const require = createRequire(import.meta.url);
const fhirpath = require('fhirpath') as {
  evaluate(resource: unknown, expression: string, context: unknown, model: unknown, options: object): unknown[];
};
const model = require('fhirpath/fhir-context/r4') as unknown;

/** What fhirpath.js answers for an element when asked not to resolve its internal types. */
interface Node {
  data: unknown;
  parentResNode: Node | null;
  propName: string | null;
  index: number | null;
  fhirNodeDataType?: string;
}

type Json = Record<string, unknown>;
type Definition = NonNullable<ReturnType<typeof elementDefinition>>;

interface Operation {
  type: 'add' | 'insert' | 'delete' | 'replace' | 'move';
  path: string;
  name?: string | undefined;
  value?: Json | undefined;
  index?: number | undefined;
  source?: number | undefined;
  destination?: number | undefined;
}

/** Operations in one patch (JSON Patch or FHIRPath Patch): each is work under the vault's write lock. */
export const MAX_PATCH_OPERATIONS = 1000;
const MAX_PATH = 1000;
/**
 * The FHIRPath a patch path may use: navigation, indexers, operators and the functions that select or test
 * without building anything. fhirpath.js evaluates synchronously and cannot be stopped, and a path that refers
 * back to the resource from inside a function (`%context`), or grows strings (`replace`) or collections
 * (`select`, `repeat`, `aggregate`, `descendants`), can exhaust the process with a few dozen characters.
 */
const FUNCTIONS = new Set([
  'where',
  'first',
  'last',
  'tail',
  'skip',
  'take',
  'single',
  'exists',
  'empty',
  'not',
  'ofType',
  'is',
  'as',
  'hasValue',
  'count',
  'startsWith',
  'endsWith',
  'contains',
  'lower',
  'upper',
  'length',
  'extension',
  'allTrue',
  'anyTrue',
]);

const invalid = (message: string) => new FhirError(400, 'invalid', `FHIRPath Patch: ${message}`);
const cannot = (op: Operation, message: string) =>
  new FhirError(400, 'processing', `FHIRPath Patch ${op.type} at ${op.path}: ${message}`);
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * FHIRPath Patch (R4 fhirpatch.html): a Parameters resource of `operation`s (add, insert, delete, replace,
 * move), each naming its target with a FHIRPath expression that fhirpath.js evaluates against the resource;
 * the nodes it finds carry their place in the JSON, which is changed in a copy. Values are `value[x]`, or
 * `part`s for an element without a type of its own (a backbone). The result is validated by the caller.
 */
export function applyFhirPathPatch(resource: Json, parameters: unknown): Json {
  const operations = parseOperations(parameters);
  const copy = structuredClone(resource);
  for (const op of operations) apply(copy, op);
  return copy;
}

function parseOperations(parameters: unknown): Operation[] {
  if (!isObject(parameters) || parameters.resourceType !== 'Parameters')
    throw invalid('the body is a Parameters resource of operations');
  const list = parameters.parameter ?? [];
  if (!Array.isArray(list)) throw invalid('Parameters.parameter must be an array');
  if (list.length > MAX_PATCH_OPERATIONS) throw invalid(`at most ${MAX_PATCH_OPERATIONS} operations in one patch`);
  return list.map((p, i) => {
    if (!isObject(p) || p.name !== 'operation' || !Array.isArray(p.part))
      throw invalid(`parameter[${i}] must be an operation with parts`);
    const parts = new Map<string, Json>();
    for (const part of p.part) {
      if (!isObject(part) || typeof part.name !== 'string') throw invalid(`operation ${i}: every part needs a name`);
      if (parts.has(part.name)) throw invalid(`operation ${i}: ${part.name} is given twice`);
      parts.set(part.name, part);
    }
    const type = parts.get('type')?.valueCode;
    const path = parts.get('path')?.valueString;
    if (type !== 'add' && type !== 'insert' && type !== 'delete' && type !== 'replace' && type !== 'move')
      throw invalid(`operation ${i}: type is one of add, insert, delete, replace, move`);
    if (typeof path !== 'string' || !path) throw invalid(`operation ${i}: path is required`);
    checkPath(path, i);
    const integer = (name: string) => {
      const v = parts.get(name)?.valueInteger;
      if (v === undefined) throw invalid(`operation ${i} (${type}): ${name} is required`);
      if (!Number.isInteger(v) || (v as number) < 0)
        throw invalid(`operation ${i}: ${name} must be a whole number ≥ 0`);
      return v as number;
    };
    const op: Operation = { type, path };
    if (type === 'add') {
      const name = parts.get('name')?.valueString;
      if (typeof name !== 'string' || !/^[a-z][A-Za-z0-9]*$/.test(name))
        throw invalid(`operation ${i} (add): name must be an element name`);
      op.name = name;
    }
    if (type === 'add' || type === 'insert' || type === 'replace') {
      op.value = parts.get('value');
      if (!op.value) throw invalid(`operation ${i} (${type}): value is required`);
    }
    if (type === 'insert') op.index = integer('index');
    if (type === 'move') {
      op.source = integer('source');
      op.destination = integer('destination');
    }
    return op;
  });
}

/** Refuses what FHIRPath Patch paths do not need and could make evaluation unbounded (see FUNCTIONS). */
function checkPath(path: string, i: number): void {
  if (path.length > MAX_PATH) throw invalid(`operation ${i}: a path is at most ${MAX_PATH} characters`);
  // String literals may hold anything; what is outside them is what runs.
  const code = path.replace(/'(?:[^'\\]|\\.)*'/g, "''");
  if (code.includes('%')) throw invalid(`operation ${i}: variables (%…) are not allowed in a patch path`);
  for (const m of code.matchAll(/([A-Za-z_][A-Za-z0-9_]*)\s*\(/g)) {
    if (!FUNCTIONS.has(m[1] as string))
      throw invalid(`operation ${i}: ${m[1]}() is not allowed in a patch path (allowed: ${[...FUNCTIONS].join(', ')})`);
  }
}

function select(resource: Json, op: Operation): Node[] {
  let found: unknown[];
  try {
    found = fhirpath.evaluate(resource, op.path, null, model, { resolveInternalTypes: false });
  } catch (err) {
    throw invalid(`path ${op.path} is not a FHIRPath expression this server can evaluate: ${(err as Error).message}`);
  }
  return found.map((n) => {
    if (!isObject(n) || !('parentResNode' in n) || !('data' in n))
      throw cannot(op, 'the path selects a value, not an element');
    return n as unknown as Node;
  });
}

/** The JSON object holding a node, the key it is under (a choice's own, `deceasedBoolean`) and its index. */
function placeOf(node: Node, op: Operation): { holder: Json; key: string; index: number | null } {
  const holder = node.parentResNode?.data;
  if (!isObject(holder) || !node.propName) throw cannot(op, 'the resource itself cannot be changed this way');
  let key = node.propName;
  if (!(key in holder)) {
    const choice = Object.keys(holder).find((k) => k.startsWith(key) && /^[A-Z]/.test(k.slice(key.length)));
    if (!choice) throw cannot(op, `${key} is not where the path found it`);
    key = choice;
  }
  return { holder, key, index: Array.isArray(holder[key]) ? (node.index ?? 0) : null };
}

/** The R4 type of a node: its resourceType, or its element's type in its parent's type. */
function typeOf(node: Node): string {
  if (isObject(node.data) && typeof node.data.resourceType === 'string') return node.data.resourceType;
  const parent = node.parentResNode;
  const def = parent && node.propName ? elementDefinition(typeOf(parent), node.propName) : undefined;
  if (!def) return node.fhirNodeDataType ?? 'Element';
  if (!def.choice) return def.typeName;
  const key = isObject(parent?.data)
    ? Object.keys(parent.data).find((k) => k.startsWith(node.propName as string) && k !== node.propName)
    : undefined;
  const suffix = key?.slice((node.propName as string).length).toLowerCase();
  return def.type.find((t) => t.code.toLowerCase() === suffix)?.code ?? def.typeName;
}

/** A value part as JSON: its `value[x]` (with the type suffix a choice element's key takes), or its parts. */
function partValue(part: Json, def: Definition, op: Operation): { value: unknown; suffix: string } {
  const key = Object.keys(part).find((k) => /^value[A-Z]/.test(k));
  if (key) return { value: part[key], suffix: key.slice('value'.length) };
  if (!Array.isArray(part.part)) throw cannot(op, 'the value has neither value[x] nor parts');
  const out: Json = {};
  for (const sub of part.part) {
    if (!isObject(sub) || typeof sub.name !== 'string') throw cannot(op, 'every part of a value needs a name');
    const subDef = elementDefinition(def.typeName, sub.name);
    if (!subDef) throw cannot(op, `${def.typeName} has no element ${sub.name}`);
    const { value, suffix } = partValue(sub, subDef, op);
    const subKey = subDef.choice ? `${sub.name}${suffix}` : sub.name;
    if (subDef.isArray) out[subKey] = [...((out[subKey] as unknown[]) ?? []), value];
    else if (subKey in out) throw cannot(op, `${sub.name} is given twice`);
    else out[subKey] = value;
  }
  return { value: out, suffix: '' };
}

/** The list a path selects: every node in one array of one holder. */
function listOf(nodes: Node[], op: Operation): { holder: Json; key: string; list: unknown[]; node: Node } {
  const first = nodes[0];
  if (!first) throw cannot(op, 'the path selects no list');
  const place = placeOf(first, op);
  const list = place.holder[place.key];
  if (
    !Array.isArray(list) ||
    nodes.some((n) => n.parentResNode?.data !== place.holder || n.propName !== first.propName)
  )
    throw cannot(op, 'the path must select one list');
  return { holder: place.holder, key: place.key, list, node: first };
}

/** Keeps a primitive list's `_key` extensions in step with it. */
function sibling(holder: Json, key: string, change: (list: unknown[]) => void): void {
  const ext = holder[`_${key}`];
  if (Array.isArray(ext)) change(ext);
}

/** Adds element `name` of `type` with the operation's value to `holder`: appended to a list, or set when unset. */
function addTo(holder: Json, type: string, name: string, op: Operation): void {
  const def = elementDefinition(type, name);
  if (!def) throw cannot(op, `${type} has no element ${name}`);
  const { value, suffix } = partValue(op.value as Json, def, op);
  const key = def.choice ? `${name}${suffix}` : name;
  if (def.isArray) {
    const list = holder[key];
    if (list !== undefined && !Array.isArray(list)) throw cannot(op, `${key} is not a list`);
    holder[key] = [...(list ?? []), value];
    return;
  }
  const taken = Object.keys(holder).some(
    (k) => k === name || (def.choice && k.startsWith(name) && /^[A-Z]/.test(k.slice(name.length))),
  );
  if (taken) throw cannot(op, `${name} has a value already (replace it instead)`);
  holder[key] = value;
}

function apply(resource: Json, op: Operation): void {
  const nodes = select(resource, op);
  switch (op.type) {
    case 'add': {
      if (nodes.length !== 1) throw cannot(op, `the path must select one element, not ${nodes.length}`);
      const container = nodes[0] as Node;
      const name = op.name as string;
      if (isObject(container.data)) {
        addTo(container.data, typeOf(container), name, op);
        return;
      }
      // A primitive's id and extensions live beside it, under `_key` (json.html#primitive).
      if (name !== 'id' && name !== 'extension') throw cannot(op, `a primitive has only id and extension, not ${name}`);
      const { holder, key, index } = placeOf(container, op);
      if (index === null) {
        const element = holder[`_${key}`] ?? {};
        if (!isObject(element)) throw cannot(op, `_${key} is not an element`);
        addTo(element, 'Element', name, op);
        holder[`_${key}`] = element;
        return;
      }
      const list = holder[key] as unknown[];
      const elements = holder[`_${key}`] ?? list.map(() => null);
      if (!Array.isArray(elements) || elements.length !== list.length)
        throw cannot(op, `_${key} is not in step with ${key}`);
      const element = elements[index] ?? {};
      if (!isObject(element)) throw cannot(op, `_${key}[${index}] is not an element`);
      addTo(element, 'Element', name, op);
      elements[index] = element;
      holder[`_${key}`] = elements;
      return;
    }
    case 'insert': {
      const { holder, key, list, node } = listOf(nodes, op);
      const index = op.index as number;
      if (index > list.length) throw cannot(op, `index ${index} is past the end of the list (${list.length})`);
      const def = elementDefinition(typeOf(node.parentResNode as Node), node.propName as string) as Definition;
      list.splice(index, 0, partValue(op.value as Json, def, op).value);
      sibling(holder, key, (ext) => ext.splice(index, 0, null));
      return;
    }
    case 'delete': {
      if (nodes.length === 0) return;
      if (nodes.length > 1) throw cannot(op, `the path selects ${nodes.length} elements; delete takes one`);
      const { holder, key, index } = placeOf(nodes[0] as Node, op);
      const list = holder[key];
      if (index !== null && Array.isArray(list)) {
        list.splice(index, 1);
        sibling(holder, key, (ext) => ext.splice(index, 1));
        if (list.length > 0) return;
      }
      delete holder[key];
      delete holder[`_${key}`];
      return;
    }
    case 'replace': {
      if (nodes.length !== 1) throw cannot(op, `the path must select one element, not ${nodes.length}`);
      const node = nodes[0] as Node;
      const { holder, key, index } = placeOf(node, op);
      const def = elementDefinition(typeOf(node.parentResNode as Node), node.propName as string);
      if (!def) throw cannot(op, `${node.propName} is not an element this server knows`);
      const { value, suffix } = partValue(op.value as Json, def, op);
      if (index !== null) {
        (holder[key] as unknown[])[index] = value;
        return;
      }
      // A choice may change its type: deceasedBoolean becomes deceasedDateTime.
      const next = def.choice ? `${node.propName}${suffix}` : key;
      if (next !== key) {
        delete holder[key];
        delete holder[`_${key}`];
      }
      holder[next] = value;
      return;
    }
    case 'move': {
      const { holder, key, list } = listOf(nodes, op);
      const [from, to] = [op.source as number, op.destination as number];
      if (from >= list.length || to >= list.length)
        throw cannot(op, `source ${from} and destination ${to} must be inside the list (${list.length})`);
      const move = (l: unknown[]) => l.splice(to, 0, ...l.splice(from, 1));
      move(list);
      sibling(holder, key, move);
      return;
    }
  }
}
