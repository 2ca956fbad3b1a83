import { StoreBusyError, StoreUnavailableError } from '../../store/errors.ts';
import type { FhirContext } from '../context.ts';
import { FhirError, operationOutcome, storeErrorAsFhir } from '../errors.ts';
import { responseLimit } from '../response-size.ts';
import type { EntryRequest, InvalidEntry } from './entries.ts';
import { type EntryResult, failed, notRun, sizeOf } from './results.ts';
import { runTransaction } from './transaction.ts';

/** A batch: every entry on its own (its own transaction, its own permission check); failures stay in their entry. */
export async function runBatch(
  ctx: FhirContext,
  entries: (EntryRequest | InvalidEntry)[],
  returnResources: boolean,
): Promise<EntryResult[]> {
  const results: EntryResult[] = [];
  let used = 0;
  let wrote = false;
  let down: FhirError | undefined;
  for (const e of entries) {
    // Each entry may fill what the answer has left: a search's page ends there.
    const room = responseLimit(ctx) - used;
    if (room <= 0 || down) {
      results.push(down ? failed(down) : notRun(ctx));
      continue;
    }
    if ('invalid' in e) {
      results.push({
        status: e.invalid.status,
        outcome: operationOutcome('error', e.invalid.code, e.invalid.diagnostics),
      });
      continue;
    }
    try {
      const [r] = await runTransaction({ ...ctx, responseLimit: room }, [{ ...e, index: e.index }], returnResources);
      results.push(r as EntryResult);
      used += sizeOf(r as EntryResult);
      if (e.method !== 'GET' && (r as EntryResult).status < 400) wrote = true;
    } catch (thrown) {
      // A search past its time, or one that found every search thread taken, is that entry's failure. An
      // unreachable database is the whole batch's, unless an entry before was written: then this one and the rest
      // answer 503, and the written ones are reported.
      const err = storeErrorAsFhir(thrown);
      if (!(err instanceof FhirError)) throw err;
      if (thrown instanceof StoreUnavailableError && !(thrown instanceof StoreBusyError)) {
        if (!wrote) throw thrown;
        down = err;
      }
      results.push(failed(err));
    }
  }
  return results;
}
