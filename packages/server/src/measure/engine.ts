import type * as Fqm from 'fqm-execution';

/**
 * fqm-execution (the engine behind the DEQM test server of seed 002) is large; load it on the first measure
 * operation rather than at start. Its types speak `fhir4.*` from its own @types/fhir; ours are structurally
 * the same JSON, so the boundary casts live here only.
 */
let loading: Promise<typeof Fqm.Calculator> | undefined;
export const calculator = (): Promise<typeof Fqm.Calculator> =>
  (loading ??= import('fqm-execution').then((m) => m.Calculator));

export type FqmBundle = Parameters<typeof Fqm.Calculator.calculate>[0];
export type FqmOptions = Fqm.CalculationOptions;
