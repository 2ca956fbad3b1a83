import type { Measure } from 'fhir/r4.js';
import { FhirError } from '../fhir/errors.ts';

/**
 * fqm-execution evaluates a population whose statement is missing or unbuildable as plain false, which would
 * report a wrong count rather than an error. So the ELM is built with cql-execution first (the engine fqm runs
 * on) and every criteria expression of the Measure must name a statement or function it could build.
 */
export async function checkPopulations(measure: Measure, libraryId: string, elm: unknown): Promise<void> {
  const { Library } = await import('cql-execution');
  let lib: {
    expressions: Record<string, { expression?: unknown }>;
    functions?: Record<string, { expression?: unknown }[]>;
  };
  try {
    lib = new Library(elm as ConstructorParameters<typeof Library>[0]) as unknown as typeof lib;
  } catch (err) {
    throw new FhirError(
      422,
      'processing',
      `Library ${libraryId}: the ELM is not valid (${String((err as Error).message).slice(0, 200)})`,
    );
  }
  const criteria = (measure.group ?? []).flatMap((g) => [
    ...(g.population ?? []).map((p) => ({
      what: p.code?.coding?.[0]?.code ?? 'population',
      expr: p.criteria?.expression,
    })),
    ...(g.stratifier ?? []).map((s) => ({ what: 'stratifier', expr: s.criteria?.expression })),
  ]);
  for (const { what, expr } of criteria) {
    if (!expr) throw new FhirError(422, 'processing', `Measure/${measure.id}: a ${what} has no criteria expression`);
    const defs = lib.expressions[expr] ? [lib.expressions[expr]] : (lib.functions?.[expr] ?? []);
    if (defs.length === 0) {
      throw new FhirError(
        422,
        'processing',
        `Measure/${measure.id}: the ${what} names "${expr}", which Library ${libraryId} does not define`,
      );
    }
    if (defs.some((d) => d.expression === null || d.expression === undefined)) {
      throw new FhirError(
        422,
        'processing',
        `Library ${libraryId}: "${expr}" is not valid ELM (the engine cannot build it)`,
      );
    }
  }
}
