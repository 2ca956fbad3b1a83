import type { FhirContext } from './context.ts';
import { FhirError } from './errors.ts';

/**
 * What one answer may hold, in characters of resource JSON (CAREVAULT_MAX_RESPONSE_MB): a page of search,
 * history or `$everything` takes matches until it reaches it and its `next` link goes on from there; a batch or
 * transaction runs no more entries once its answer reached it. Without it, a batch of searches or a page of large
 * DocumentReferences built an answer of gigabytes (and past V8's longest string, a 500 after all that work).
 */
export const DEFAULT_RESPONSE_LIMIT = 64 * 1024 * 1024;

export const responseLimit = (ctx: FhirContext): number => ctx.responseLimit ?? DEFAULT_RESPONSE_LIMIT;

/**
 * How many of `sizes`, in order, fit into `room`. A page's first match is always taken, however large: it was
 * stored under the body limit, and a page without it could never be paged past.
 */
export function fitting(sizes: number[], room: number, first: boolean): number {
  let used = 0;
  for (let n = 0; n < sizes.length; n++) {
    used += sizes[n] as number;
    if (used > room) return n === 0 && first ? 1 : n;
  }
  return sizes.length;
}

/** A page whose matches fit but whose included resources do not: it cannot be shortened past its first match. */
export function includedTooLarge(ctx: FhirContext): FhirError {
  const mib = Math.round(responseLimit(ctx) / 1024 / 1024);
  return new FhirError(
    400,
    'too-costly',
    `the page with its included resources is more than the ${mib} MiB an answer may hold; lower _count`,
  );
}

/** The outcome of a batch or transaction entry that was not run because the answer was full. */
export function answerFull(ctx: FhirContext): FhirError {
  const mib = Math.round(responseLimit(ctx) / 1024 / 1024);
  return new FhirError(
    400,
    'too-costly',
    `not run: this Bundle's answer reached the ${mib} MiB it may hold; send this entry and those after it again in another Bundle`,
  );
}
