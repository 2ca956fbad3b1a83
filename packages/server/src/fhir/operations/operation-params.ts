import type { FastifyRequest } from 'fastify';
import { FhirError } from '../errors.ts';

const PRIMITIVE = [
  'valueDate',
  'valueDateTime',
  'valueInstant',
  'valueString',
  'valueCode',
  'valueId',
  'valueUri',
  'valueCanonical',
];

/**
 * The input parameters of an operation (operations.html#request): the query string for GET, a Parameters
 * body for POST (primitive values, booleans, whole numbers and `valueReference.reference`), both read into one
 * URLSearchParams. The parameters named in `complex` carry a data type (a Coding…) that `complexParams` reads.
 */
export function operationParams(req: FastifyRequest, complex: readonly string[] = []): URLSearchParams {
  const params = new URLSearchParams(req.raw.url?.split('?')[1] ?? '');
  if (req.method !== 'POST' || req.body === undefined || req.body === null) return params;
  if (Array.isArray(req.body)) {
    for (const [k, v] of req.body as [string, string][]) params.append(k, v);
    return params;
  }
  const body = req.body as { resourceType?: string; parameter?: Record<string, unknown>[] };
  if (body.resourceType !== 'Parameters') throw new FhirError(400, 'invalid', 'the operation takes a Parameters body');
  for (const p of body.parameter ?? []) {
    const name = p.name;
    if (typeof name !== 'string') throw new FhirError(400, 'invalid', 'every parameter needs a name');
    if (complex.includes(name)) continue;
    const key = PRIMITIVE.find((k) => typeof p[k] === 'string');
    const ref = (p.valueReference as { reference?: unknown } | undefined)?.reference;
    const number = [p.valueInteger, p.valueUnsignedInt, p.valuePositiveInt].find((v) => typeof v === 'number');
    if (key) params.append(name, p[key] as string);
    else if (number !== undefined) params.append(name, String(number));
    else if (typeof p.valueBoolean === 'boolean') params.append(name, String(p.valueBoolean));
    else if (typeof ref === 'string') params.append(name, ref);
    else throw new FhirError(400, 'not-supported', `parameter ${name}: only primitive values and references are taken`);
  }
  return params;
}

/**
 * The values of type `key` (`valueCoding`, `valueCodeableConcept`) of a Parameters body's parameters named
 * `name`; a parameter of that name with another value is a 400. A GET cannot carry them (operations.html#request).
 */
export function complexParams(req: FastifyRequest, name: string, key: string): Record<string, unknown>[] {
  if (req.method !== 'POST') return [];
  const body = req.body as { parameter?: Record<string, unknown>[] } | undefined;
  return (body?.parameter ?? [])
    .filter((p) => p.name === name)
    .map((p) => {
      const value = p[key];
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw new FhirError(400, 'invalid', `parameter ${name} takes a ${key}`);
      }
      return value as Record<string, unknown>;
    });
}
