import type { FhirContext } from './context.ts';
import { FhirError } from './errors.ts';
import { elementDefinition, type ValidationIssue, valuesAt } from './validation/validate.ts';
import { type ExpandedCode, expandValueSet, type ValueSetLookup, valueSetLookup } from './value-set-expansion.ts';

type Obj = Record<string, unknown>;
type Binding = { strength?: unknown; valueSet?: unknown };
type Coding = { system?: string; code: string };
const CODED = ['CodeableConcept', 'Coding', 'Code'];
const unversioned = (url: string) => url.replace(/\|[^|]*$/, '');

/**
 * The terminology bindings a profile adds (R4 terminologies.html#strength), checked against the ValueSets of the
 * vault: a value outside a `required` binding's ValueSet is an error, outside an `extensible` one a warning. Only
 * bindings the profile changed from R4 are looked at (R4's own required codes are checked for every resource),
 * and only where the resource has a value. A ValueSet that cannot be expanded here (not held, a filter, no
 * ValueSet read) is a warning that the element was not checked. Sliced elements are left to the structural check.
 */
export async function bindingIssues(
  ctx: FhirContext,
  resource: Obj,
  name: string,
  profile: Obj,
): Promise<ValidationIssue[]> {
  const type = resource.resourceType as string;
  const elements = (profile.snapshot as { element?: Obj[] } | undefined)?.element ?? [];
  const issues: ValidationIssue[] = [];
  let lookup: ValueSetLookup | undefined;
  const expansions = new Map<string, Promise<ExpandedCode[]>>();
  const expand = (valueSet: string) => {
    let codes = expansions.get(valueSet);
    if (!codes) {
      codes = (async () => {
        lookup ??= valueSetLookup(ctx, `checking the bindings of profile ${name}`);
        return (await expandValueSet(lookup, valueSet)).codes;
      })();
      expansions.set(valueSet, codes);
    }
    return codes;
  };
  for (const e of elements) {
    const binding = e.binding as Binding | undefined;
    const strength = binding?.strength;
    const valueSet = binding?.valueSet;
    const path = e.path;
    if ((strength !== 'required' && strength !== 'extensible') || typeof valueSet !== 'string') continue;
    if (typeof path !== 'string' || !path.startsWith(`${type}.`) || String(e.id ?? '').includes(':')) continue;
    const below = path.split('.').slice(1);
    const base = baseBinding(type, below);
    if (base?.strength === strength && unversioned(String(base.valueSet)) === unversioned(valueSet)) continue;
    const values = valuesOfElement(resource, below)
      .map(codingsOf)
      .filter((c) => c.length > 0);
    if (values.length === 0) continue;
    const why = `${strength} binding of ${path} in profile ${name}`;
    let codes: ExpandedCode[];
    try {
      codes = await expand(valueSet);
    } catch (err) {
      if (!(err instanceof FhirError) || err.status >= 500) throw err;
      const diagnostics = `${path} was not checked against ValueSet ${valueSet} (${why}): ${err.diagnostics}`;
      issues.push({ severity: 'warning', code: 'not-supported', diagnostics, expression: [path] });
      continue;
    }
    for (const codings of values) {
      if (
        codings.some((c) => codes.some((x) => x.code === c.code && (c.system === undefined || x.system === c.system)))
      ) {
        continue;
      }
      const said = codings.map((c) => (c.system ? `${c.system}|${c.code}` : `"${c.code}"`)).join(', ');
      issues.push({
        ...(strength === 'extensible' ? { severity: 'warning' as const } : {}),
        code: 'code-invalid',
        diagnostics: `${said} is not in ValueSet ${valueSet} (${why})`,
        expression: [path],
      });
    }
  }
  return issues;
}

/** R4's binding of an element, backbone elements walked by their type (Observation.component.code). */
function baseBinding(type: string, below: string[]): Binding | undefined {
  let at = type;
  for (const [i, name] of below.entries()) {
    const d = elementDefinition(at, name);
    if (!d) return undefined;
    if (i === below.length - 1) return (d as { binding?: Binding }).binding;
    at = d.typeName;
  }
  return undefined;
}

/** The values of an element; a choice (`value[x]`) by its coded types. */
function valuesOfElement(resource: Obj, below: string[]): unknown[] {
  const last = below[below.length - 1] as string;
  if (!last.endsWith('[x]')) return valuesAt(resource, below);
  const prefix = last.slice(0, -3);
  return valuesAt(resource, below.slice(0, -1)).flatMap((parent) =>
    typeof parent === 'object' && parent !== null
      ? CODED.map((t) => (parent as Obj)[`${prefix}${t}`]).filter((v) => v !== undefined)
      : [],
  );
}

/** A code, a Coding or a CodeableConcept as its codings (any of which may be in the ValueSet). */
function codingsOf(value: unknown): Coding[] {
  if (typeof value === 'string') return [{ code: value }];
  if (typeof value !== 'object' || value === null) return [];
  const v = value as { coding?: unknown; system?: unknown; code?: unknown };
  const list = Array.isArray(v.coding) ? (v.coding as { system?: unknown; code?: unknown }[]) : [v];
  return list.flatMap((c) =>
    typeof c?.code === 'string'
      ? [typeof c.system === 'string' ? { system: c.system, code: c.code } : { code: c.code }]
      : [],
  );
}
