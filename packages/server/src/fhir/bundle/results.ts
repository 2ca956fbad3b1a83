import type { CurrentVersion } from '../../store/types.ts';
import type { FhirContext } from '../context.ts';
import { type FhirError, operationOutcome } from '../errors.ts';
import { answerFull } from '../response-size.ts';
import { type EntryRequest, type InvalidEntry, STATUS_TEXT } from './entries.ts';

// What a batch or transaction answers: each entry's result, and the response Bundle around them.

/** Outcome of one entry, rendered into Bundle.entry.response. */
export interface EntryResult {
  status: number;
  version?: CurrentVersion | undefined;
  /** JSON text of a resource to return (GET results, or writes with return=representation). */
  resource?: string | undefined;
  outcome?: unknown;
}

/** An entry that failed, answered in its own entry. */
export const failed = (err: FhirError): EntryResult => ({
  status: err.status,
  outcome: operationOutcome('error', err.code, err.diagnostics),
});
/** An entry not run: the answer was full before its turn. */
export const notRun = (ctx: FhirContext) => failed(answerFull(ctx));
/** What an entry adds to the answer. */
export const sizeOf = (r: EntryResult) => r.resource?.length ?? 0;

/** The batch-response / transaction-response Bundle, as text around the stored JSON. */
export function responseBundle(
  base: string,
  type: 'batch' | 'transaction',
  entries: (EntryRequest | InvalidEntry)[],
  results: EntryResult[],
): string {
  const parts = results.map((r, i) => {
    const e = entries[i] as EntryRequest;
    const response: Record<string, unknown> = { status: STATUS_TEXT[r.status] ?? String(r.status) };
    if (r.version) {
      if (e.method === 'POST' || e.method === 'PUT')
        response.location = `${r.version.type}/${r.version.id}/_history/${r.version.version}`;
      response.etag = `W/"${r.version.version}"`;
      response.lastModified = r.version.lastUpdated;
    }
    if (r.outcome) response.outcome = r.outcome;
    const fullUrl = r.version ? `,"fullUrl":${JSON.stringify(`${base}/${r.version.type}/${r.version.id}`)}` : '';
    return `{${r.resource ? `"resource":${r.resource},` : ''}"response":${JSON.stringify(response)}${fullUrl}}`;
  });
  return `{"resourceType":"Bundle","type":"${type}-response","entry":[${parts.join(',')}]}`;
}
