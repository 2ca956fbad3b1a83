import { readFileSync } from 'node:fs';
import {
  getElementDefinition,
  getElementDefinitionTypeName,
  type InternalSchemaElement,
  indexStructureDefinitionBundle,
  OperationOutcomeError,
  validateResource,
} from '@medplum/core';
import { FhirError, type IssueCode } from '../errors.ts';
import { isPrototypeName } from '../json-body.ts';
import { conformsFast, largeBase64At } from './structure-fast-path.ts';

let indexed = false;
/** Per resource type: [element path below the type, allowed codes, the dotted path for messages]. */
let requiredCodes: Map<string, [string[], string[], string][]> | undefined;

/** Loads the generated definitions once (≈3 MB, ~50 ms), on first use. */
function ensureLoaded(): Map<string, [string[], string[], string][]> {
  if (!indexed) {
    const bundle = JSON.parse(
      readFileSync(new URL('./structure-definitions.json', import.meta.url), 'utf8'),
    ) as Parameters<typeof indexStructureDefinitionBundle>[0];
    indexStructureDefinitionBundle(bundle);
    indexed = true;
  }
  if (!requiredCodes) {
    const byPath = JSON.parse(readFileSync(new URL('./required-codes.json', import.meta.url), 'utf8')) as Record<
      string,
      string[]
    >;
    requiredCodes = new Map();
    for (const [path, codes] of Object.entries(byPath)) {
      const [type = '', ...below] = path.split('.');
      const list = requiredCodes.get(type) ?? [];
      list.push([below, codes, path]);
      requiredCodes.set(type, list);
    }
  }
  return requiredCodes;
}

/** The R4 definition of `type`'s element `name` (a choice by its bare name, `deceased`), and its type's name. */
export function elementDefinition(
  type: string,
  name: string,
): (InternalSchemaElement & { typeName: string; choice: boolean }) | undefined {
  ensureLoaded();
  // medplum looks the name up on a plain object: `valueOf` would find Object's (a FHIRPath Patch answered 500).
  if (isPrototypeName(name)) return undefined;
  const d = getElementDefinition(type, name);
  return d && { ...d, typeName: getElementDefinitionTypeName(d), choice: d.path.endsWith('[x]') };
}

/** Values at a dotted element path (arrays flattened), e.g. Observation.component.code → every component's code. */
export function valuesAt(resource: Record<string, unknown>, path: string[]): unknown[] {
  let current: unknown[] = [resource];
  for (const key of path) {
    current = current.flatMap((v) => {
      if (typeof v !== 'object' || v === null) return [];
      const next = (v as Record<string, unknown>)[key];
      return next === undefined ? [] : Array.isArray(next) ? next : [next];
    });
  }
  return current;
}

/** One problem with a resource: the issue code, what is wrong and where (FHIRPath from the resource type). */
export interface ValidationIssue {
  /** An error unless said otherwise: a warning does not stop the content from being accepted. */
  severity?: 'error' | 'warning';
  code: IssueCode;
  diagnostics: string;
  expression?: string[] | undefined;
}

/**
 * Structural validation against the R4 StructureDefinitions (@medplum/core: cardinality, types,
 * unknown elements, invariants) plus the codes of required bindings that it does not check, such as
 * Observation.status. The fast path proves the common case; medplum validates whatever it cannot prove and words
 * every error. Every problem found, none for a resource that conforms ($validate answers with all of them).
 */
export function validationIssues(resource: Record<string, unknown>): ValidationIssue[] {
  const required = ensureLoaded();
  const issues = conformsFast(resource) ? [] : structure(resource);
  for (const [below, codes, path] of required.get(resource.resourceType as string) ?? []) {
    for (const v of valuesAt(resource, below)) {
      if (typeof v === 'string' && !codes.includes(v)) {
        const allowed = `${codes.slice(0, 12).join(', ')}${codes.length > 12 ? ', …' : ''}`;
        issues.push({
          code: 'code-invalid',
          diagnostics: `"${v}" is not a valid code for ${path} (allowed: ${allowed})`,
          expression: [path],
        });
      }
    }
  }
  return issues;
}

/**
 * A create's or an update's validation: a violation is 422 with the path of the problem (http.html#create) —
 * the structural problems together, else the first code outside its required binding.
 */
export function validate(resource: Record<string, unknown>): void {
  const issues = validationIssues(resource);
  if (issues.length === 0) return;
  const structural = issues.filter((i) => i.code !== 'code-invalid');
  if (structural.length === 0) {
    const first = issues[0] as ValidationIssue;
    throw new FhirError(422, first.code, first.diagnostics, {}, first.expression);
  }
  // Each problem says where it is: "Missing required property" twice says nothing about what to fix.
  const expression = structural.flatMap((i) => i.expression ?? []).slice(0, 20);
  throw new FhirError(
    422,
    'invalid',
    structural
      .slice(0, 10)
      .map((i) => (i.expression?.length ? `${i.expression.join(', ')}: ${i.diagnostics}` : i.diagnostics))
      .join('; '),
    {},
    expression.length ? expression : undefined,
  );
}

/**
 * The problems of a resource against a profile: a StructureDefinition with a snapshot (medplum validates against
 * snapshots; carevault does not generate them). The R4 definitions' problems come again among them.
 */
export function profileIssues(resource: Record<string, unknown>, profile: Record<string, unknown>): ValidationIssue[] {
  ensureLoaded();
  return structure(resource, profile);
}

/** medplum's errors for a resource it could not prove, as issues. */
function structure(resource: Record<string, unknown>, profile?: Record<string, unknown>): ValidationIssue[] {
  try {
    validateResource(resource as never, profile ? { profile: profile as never } : undefined);
    return [];
  } catch (err) {
    if (err instanceof OperationOutcomeError) {
      const issues = (err.outcome.issue ?? []) as {
        severity: string;
        diagnostics?: string;
        details?: { text?: string };
        expression?: string[];
      }[];
      const out: ValidationIssue[] = [];
      for (const i of issues) {
        if (i.severity !== 'error' && i.severity !== 'fatal') continue;
        let diagnostics = i.details?.text ?? i.diagnostics ?? 'invalid';
        // medplum's string limit on base64Binary: a valid value passes; an invalid one is said to be invalid.
        const base64 = /larger than 1 MB/.test(diagnostics)
          ? largeBase64At(resource, i.expression?.[0] ?? '')
          : undefined;
        if (base64 === 'valid') continue;
        if (base64 === 'invalid')
          diagnostics = 'Invalid base64Binary value: not base64 (RFC 4648) in whole groups of four';
        out.push({ code: 'invalid', diagnostics, expression: i.expression });
      }
      return out;
    }
    // medplum refuses some malformed shapes with a plain Error (a primitive's `_element` that is not an object):
    // the input's fault, answered like any other structural error rather than as an internal one.
    return [{ code: 'structure', diagnostics: `the resource is malformed: ${(err as Error).message}` }];
  }
}
