import type { IndexRows, ResourceTransaction, ResourceWrite } from '../store/types.ts';
import { patientsIn, proxyOf } from '../vault/compartment.ts';
import { decide, type Interaction, writeCompartment } from '../vault/policy.ts';
import { auditOf, proxyPatients } from './audit.ts';
import { insufficientScope } from './bearer.ts';
import type { FhirContext } from './context.ts';
import { nextTimestamp, prepare, stamp } from './resource-body.ts';
import { newResourceId } from './resource-id.ts';
import { binaryProxyFilter, proxyUnreadable } from './search/binary-proxy.ts';
import { extractIndex } from './search/extract.ts';
import { inCompartment } from './search/version-visible.ts';
import { criteriaQuery, subscriptionParts } from './subscription/accept.ts';
import { recordWriters } from './subscription/records.ts';
import { validate } from './validation/validate.ts';

const WRITE: Record<string, Interaction> = { POST: 'create', PUT: 'update', PATCH: 'update', DELETE: 'delete' };
const SUBTYPE: Record<string, string> = { POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: 'delete' };

/**
 * Runs `fn` in one vault transaction, for every write path (create, update, patch, delete, bundles):
 * - under patient/ scopes (I13/I14) every changed resource must be in the launch patient's compartment and in
 *   no other patient's, before and after the write: an app bound to one patient does not write into, change,
 *   delete or take over what is also another patient's record (an Observation about the child whose performer
 *   is the mother is in both);
 * - every write gets its BALP AuditEvent in the same transaction, so committed data always has its event.
 */
export async function transact<T>(ctx: FhirContext, fn: (tx: ResourceTransaction) => Promise<T>): Promise<T> {
  const { access } = ctx;
  const guarded = access.person && (access.patient !== undefined || access.onlyPatients !== undefined);
  const compartmentOf = (type: string, interaction: Interaction) => writeCompartment(decide(access, type, interaction));
  let committed: ResourceWrite[] = [];
  const done = await ctx.store.resources.transaction(ctx.partition, async (tx) => {
    const writes: ResourceWrite[] = [];
    committed = writes;
    const before = new Map<string, string>();
    const result = await fn({
      now: () => tx.now(),
      async current(type, id) {
        const v = await tx.current(type, id);
        if (v?.content === undefined) return v;
        before.set(`${type}/${id}`, v.content);
        if (type === 'Binary') await assertProxyReadable(ctx, tx, `Binary/${id}`, v.content);
        const patient = guarded ? (compartmentOf(type, 'update') ?? compartmentOf(type, 'delete')) : undefined;
        if (patient !== undefined) {
          const index = extractIndex(JSON.parse(v.content) as Record<string, unknown>);
          if (!(await inCompartment((q) => tx.search(q), type, id, index, patient))) {
            throw insufficientScope(`${type}/${id} is outside the compartment of the launch patient`);
          }
          const other = await anotherPatient(tx, type, id, index, patient);
          if (other) throw insufficientScope(`${type}/${id} is also in the record of ${other}`);
        }
        return v;
      },
      async write(w) {
        const patient = guarded ? compartmentOf(w.type, WRITE[w.method] ?? 'update') : undefined;
        if (patient !== undefined && w.index) {
          if (!(await inCompartment((q) => tx.search(q), w.type, w.id, w.index, patient)))
            throw insufficientScope(`the ${w.type} would be outside the compartment of the launch patient ${patient}`);
          const other = await anotherPatient(tx, w.type, w.id, w.index, patient);
          if (other) throw insufficientScope(`the ${w.type} would also be in the record of ${other}`);
        }
        if (w.type === 'Binary' && w.index) {
          const why = await proxyUnreadable(access, ctx.base, w.index, (q) => tx.search(q));
          if (why) throw insufficientScope(`the Binary cannot be written: ${why}`);
        }
        if (w.type === 'Subscription' && w.content !== undefined && !ctx.subscriptionDispatcher)
          acceptSubscription(ctx, w.content);
        writes.push(w);
        return tx.write(w);
      },
      audit: (r) => tx.audit(r),
      search: (q) => tx.search(q),
      prefetch: async (keys) => tx.prefetch?.(keys),
    });
    const targets = writes.filter((w) => w.method !== 'DELETE' && w.type !== 'Provenance');
    if (ctx.provenance && targets.length > 0) {
      // M05: the server sets the target to every version this request wrote (not on a no-op such as a matched
      // conditional create, M07).
      const provenance = {
        ...ctx.provenance,
        target: targets.map((w) => ({ reference: `${w.type}/${w.id}/_history/${w.version}` })),
        recorded: typeof ctx.provenance.recorded === 'string' ? ctx.provenance.recorded : new Date().toISOString(),
      };
      validate(provenance);
      const id = newResourceId();
      const lastUpdated = nextTimestamp(tx.now(), undefined);
      const { content, index } = stamp(prepare(provenance, id), 1, lastUpdated);
      const write: ResourceWrite = { type: 'Provenance', id, version: 1, lastUpdated, method: 'POST', content, index };
      await tx.write(write);
      writes.push(write);
      ctx.provenanceWritten = content;
    }
    for (const w of ctx.audit.enabled ? writes : []) {
      const previous = before.get(`${w.type}/${w.id}`);
      const index = w.index ?? (previous ? extractIndex(JSON.parse(previous) as Record<string, unknown>) : undefined);
      await ctx.audit.inTransaction(
        tx,
        auditOf(ctx, SUBTYPE[w.method] ?? 'update', {
          objects: [`${w.type}/${w.id}/_history/${w.version}`],
          patients: index ? await patientsOfWrite(tx, w.type, w.id, index) : [],
        }),
      );
    }
    return result;
  });
  if (!ctx.subscriptionDispatcher) await recordWriters(ctx, committed);
  return done;
}

/** A Binary about to be changed or deleted stands in by its securityContext for a resource the token may read. */
async function assertProxyReadable(ctx: FhirContext, tx: ResourceTransaction, ref: string, content: string) {
  // A token that reads every type as it is passes; the stored Binary (up to 16 MiB) is not parsed for it.
  if (binaryProxyFilter(ctx.access, ctx.base, undefined) === undefined) return;
  const index = extractIndex(JSON.parse(content) as Record<string, unknown>);
  const why = await proxyUnreadable(ctx.access, ctx.base, index, (q) => tx.search(q));
  if (why) throw insufficientScope(`${ref} cannot be changed or deleted: ${why}`);
}

/** A patient other than `patient` whose compartment the version is in (directly or through its proxy). */
async function anotherPatient(tx: ResourceTransaction, type: string, id: string, index: IndexRows, patient: string) {
  return (await patientsOfWrite(tx, type, id, index)).find((p) => p !== `Patient/${patient}`);
}

/** The patients a written version is about, for its event: its own, or its proxy's. */
async function patientsOfWrite(tx: ResourceTransaction, type: string, id: string, index: IndexRows) {
  const own = patientsIn(type, id, index);
  return own.length > 0 ? own : proxyPatients((t, i) => tx.current(t, i), proxyOf(type, index));
}

/** A Subscription is written only if the server can serve it for this writer (subscription/accept.ts). */
function acceptSubscription(ctx: FhirContext, content: string): void {
  if (ctx.access.person)
    throw insufficientScope("a Subscription is written by a backend client (system scopes), not with a person's token");
  const parts = subscriptionParts(JSON.parse(content) as Record<string, unknown>, ctx.subscriptionEndpoints ?? []);
  criteriaQuery(parts, ctx.access, ctx.base);
}
