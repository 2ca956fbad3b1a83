import type { ResourceTransaction } from '../store/types.ts';
import { indexInCompartment } from '../vault/compartment.ts';
import { decide, type Interaction, writeCompartment } from '../vault/policy.ts';
import { insufficientScope } from './bearer.ts';
import type { FhirContext } from './context.ts';
import { extractIndex } from './search/extract.ts';

const WRITE: Record<string, Interaction> = { POST: 'create', PUT: 'update', PATCH: 'update', DELETE: 'delete' };

/**
 * Runs `fn` in one vault transaction. When the caller's write access is narrowed to the launch patient's
 * compartment (patient/ scopes, I13/I14), every resource it changes must be in that compartment both before
 * and after the write — checked here, once, for create, update, patch, delete and bundle entries alike.
 */
export function transact<T>(ctx: FhirContext, fn: (tx: ResourceTransaction) => Promise<T>): Promise<T> {
  const { access } = ctx;
  if (!access.person || access.patient === undefined) return ctx.store.resources.transaction(ctx.partition, fn);
  const compartmentOf = (type: string, interaction: Interaction) => writeCompartment(decide(access, type, interaction));
  return ctx.store.resources.transaction(ctx.partition, (tx) =>
    fn({
      async current(type, id) {
        const v = await tx.current(type, id);
        const patient = compartmentOf(type, 'update') ?? compartmentOf(type, 'delete');
        if (patient !== undefined && v?.content !== undefined) {
          const index = extractIndex(JSON.parse(v.content) as Record<string, unknown>);
          if (!indexInCompartment(type, id, index, patient)) {
            throw insufficientScope(`${type}/${id} is outside the compartment of the launch patient`);
          }
        }
        return v;
      },
      async write(w) {
        const patient = compartmentOf(w.type, WRITE[w.method] ?? 'update');
        if (patient !== undefined && w.index && !indexInCompartment(w.type, w.id, w.index, patient)) {
          throw insufficientScope(`the ${w.type} would be outside the compartment of the launch patient ${patient}`);
        }
        return tx.write(w);
      },
    }),
  );
}
