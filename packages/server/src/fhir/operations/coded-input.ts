import type { FastifyRequest } from 'fastify';
import { FhirError } from '../errors.ts';
import { complexParams } from './operation-params.ts';

/** A code as a terminology operation is given it: `code` + `system` (+ `display`), a `coding`, or a `codeableConcept`. */
export interface CodedInput {
  codings: { system?: string; code: string; display?: string }[];
  /** The codings came as one CodeableConcept: any of them may match. */
  concept: boolean;
}

const bad = (message: string) => new FhirError(400, 'invalid', message);
const text = (v: unknown) => (typeof v === 'string' ? v : undefined);

/**
 * The code of `$validate-code` and `$lookup` (R4 ValueSet-validate-code, CodeSystem-lookup), exactly one of the
 * three forms. `system` is the fallback for a bare `code` where the operation knows it (a CodeSystem's own).
 */
export function codedInput(
  req: FastifyRequest,
  params: URLSearchParams,
  op: string,
  forms: { codeableConcept: boolean; system?: string },
): CodedInput {
  for (const name of ['coding', 'codeableConcept']) {
    if (params.has(name)) throw bad(`${op}: ${name} is a data type, given in a POST Parameters body`);
  }
  const codings = complexParams(req, 'coding', 'valueCoding');
  const concepts = forms.codeableConcept ? complexParams(req, 'codeableConcept', 'valueCodeableConcept') : [];
  const code = params.get('code') ?? undefined;
  const given = [code !== undefined, codings.length > 0, concepts.length > 0].filter(Boolean).length;
  const named = forms.codeableConcept
    ? 'code (with system), coding or codeableConcept'
    : 'code (with system) or coding';
  if (given !== 1 || codings.length > 1 || concepts.length > 1) throw bad(`${op} takes one of ${named}`);
  if (code !== undefined) {
    const system = params.get('system') ?? forms.system;
    if (system === undefined) throw bad(`${op}: a code needs its system`);
    const display = params.get('display') ?? undefined;
    return { codings: [{ system, code, ...(display === undefined ? {} : { display }) }], concept: false };
  }
  const raw = codings.length ? codings : ((concepts[0]?.coding as unknown[] | undefined) ?? []);
  const out: CodedInput['codings'] = [];
  for (const c of raw.slice(0, 100) as Record<string, unknown>[]) {
    const value = text(c?.code);
    if (value === undefined) throw bad(`${op}: a coding without a code`);
    const system = text(c.system);
    const display = text(c.display);
    out.push({ code: value, ...(system ? { system } : {}), ...(display ? { display } : {}) });
  }
  if (out.length === 0) throw bad(`${op}: the codeableConcept has no coding`);
  return { codings: out, concept: concepts.length > 0 };
}
