import type { HistoryQuery, StoredVersion } from '../../store/types.ts';
import { inPatientCompartment, patientsIn, proxyOf } from '../../vault/compartment.ts';
import type { Restriction } from '../../vault/policy.ts';
import type { FhirContext } from '../context.ts';
import { extractIndex } from '../search/extract.ts';

/**
 * What changed in a vault between two instants, for a Bulk export: the deletions a `_since` export lists, and
 * the resources changed after its transactionTime, which it exports as they were then. Judged on stored
 * versions, not the search index (which holds current versions only).
 */

const PAGE = 1000;

/** What decides whether a version of a resource is in an export, beside its type: who it is about. */
export interface ExportScope {
  /** The export's patients (patient and group level); undefined: the whole vault. */
  patients: ReadonlySet<string> | undefined;
  /** The token's restrictions on the type: only patient compartments, never a query (`narrowedByQuery`). */
  restrictions: Restriction[] | undefined;
}

/**
 * Whether a type's export is narrowed by a query (a `_typeFilter`, a granular scope's). Then an older version
 * cannot be judged: the search index holds current versions only. Its deletions are not listed (listing one
 * anyway could disclose the id of a resource the client was never allowed to see), and its resources are
 * exported as they are when read, not as of the transactionTime.
 */
export function narrowedByQuery(restrictions: Restriction[] | undefined, typeFiltered: boolean): boolean {
  return typeFiltered || (restrictions ?? []).some((r) => r.query !== undefined);
}

/** A history cursor that starts with the versions written at or before `until`. */
const upTo = (until: string): HistoryQuery['before'] => ({
  lastUpdated: new Date(Date.parse(until) + 1).toISOString(),
  type: '',
  id: '',
  version: 0,
});

/** The version of a resource current at `at`: its newest written at or before it (a DELETE if it was deleted). */
export async function versionAt(
  ctx: FhirContext,
  type: string,
  id: string,
  at: string,
): Promise<StoredVersion | undefined> {
  const [then] = await ctx.store.resources.history(ctx.partition, { type, id, before: upTo(at), limit: 1 });
  return then;
}

/**
 * Each resource of `type` changed after `after` (and, given `until`, at or before it), as its newest version up
 * to `until`. Walks the type's history back to `after`, so it costs what changed, not the vault.
 */
export async function* changedBetween(
  ctx: FhirContext,
  type: string,
  after: string,
  until: string | undefined,
): AsyncGenerator<StoredVersion> {
  // History is newest first: the first version met of a resource is its newest in the window.
  const met = new Set<string>();
  let before = until === undefined ? undefined : upTo(until);
  for (;;) {
    const versions = await ctx.store.resources.history(ctx.partition, { type, since: after, before, limit: PAGE });
    for (const v of versions) {
      if (met.has(v.id) || v.lastUpdated <= after) continue; // `_since` is "after"; history's is "at or after"
      met.add(v.id);
      yield v;
    }
    const oldest = versions[versions.length - 1];
    if (versions.length < PAGE || !oldest) return;
    before = { lastUpdated: oldest.lastUpdated, type: oldest.type, id: oldest.id, version: oldest.version };
  }
}

/**
 * Whether the export would return this version of a resource (its current one, or its last before deletion),
 * whose patients — or, for a Binary standing in by proxy, its proxy's patients — are judged as of `at`.
 */
export async function wouldExport(
  ctx: FhirContext,
  version: { type: string; id: string; content: string },
  scope: ExportScope,
  at: string,
): Promise<boolean> {
  const { type, id } = version;
  if (!scope.patients && !scope.restrictions) return true;
  const index = extractIndex(JSON.parse(version.content) as Record<string, unknown>);
  let refs = patientsIn(type, id, index);
  const proxy = refs.length === 0 ? proxyOf(type, index) : undefined;
  if (proxy) {
    const then = await versionAt(ctx, proxy.type, proxy.id, at);
    if (then?.content !== undefined && then.method !== 'DELETE') {
      refs = patientsIn(proxy.type, proxy.id, extractIndex(JSON.parse(then.content) as Record<string, unknown>));
    }
  }
  const about = refs.map((p) => p.slice('Patient/'.length));
  const { patients, restrictions } = scope;
  if (patients && !about.some((p) => patients.has(p))) return false;
  // As restrictionFilter: any one restriction admits it; a patient restriction on a type outside the compartment
  // narrows nothing.
  return (
    !restrictions ||
    restrictions.some((r) => r.patient === undefined || !inPatientCompartment(type) || about.includes(r.patient))
  );
}
