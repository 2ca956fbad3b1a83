import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { HistoryQuery } from '../../store/types.ts';
import { inPatientCompartment, patientsIn } from '../../vault/compartment.ts';
import type { Restriction } from '../../vault/policy.ts';
import type { FhirContext } from '../context.ts';
import { extractIndex } from '../search/extract.ts';

const PAGE = 1000;

/** The file of a type's deletions: no resource type is spelled in lower case, so no type's file is called so. */
export const deletedFile = (type: string) => `deleted-${type}.ndjson`;
export const DELETED_FILE_RE = /^deleted-([A-Z][A-Za-z]+)\.ndjson$/;

/** What decides whether a deleted resource would have been exported. */
export interface DeletedScope {
  /** The export's patients (patient and group level); undefined: the whole vault. */
  patients: ReadonlySet<string> | undefined;
  /** The token's restrictions on the type: only patient compartments, never a query (see `deletionsListable`). */
  restrictions: Restriction[] | undefined;
}

/**
 * Whether the deletions of a type can be listed: not when the export is narrowed by a query (a `_typeFilter`, a
 * granular scope's) — a deleted resource has no search index left to check it against, and listing it anyway
 * would disclose the id of a resource the client was never allowed to see.
 */
export function deletionsListable(restrictions: Restriction[] | undefined, typeFiltered: boolean): boolean {
  return !typeFiltered && (restrictions ?? []).every((r) => r.query === undefined);
}

/**
 * The `deleted` file of a `_since` export for one type (export.html#response---complete-status: SHALL be
 * populated when `_since` is given): one transaction Bundle per line, each with one DELETE entry, for every
 * resource of the type deleted after `since` and still deleted that the export would have returned — judged on
 * its last version before the deletion: in the compartment of one of the export's patients, and within the
 * token's patient restrictions. Walks the type's history back to `since`, so it costs what the changes since
 * cost, not the vault. Returns how many it wrote (the file is removed when none).
 */
export async function writeDeleted(
  ctx: FhirContext,
  type: string,
  since: string,
  scope: DeletedScope,
  dir: string,
): Promise<number> {
  const path = join(dir, deletedFile(type));
  const out = createWriteStream(path, { mode: 0o600 });
  let count = 0;
  // History is newest first: the first version met of a resource is its newest since `since`.
  const met = new Set<string>();
  try {
    let before: HistoryQuery['before'];
    for (;;) {
      const versions = await ctx.store.resources.history(ctx.partition, { type, since, before, limit: PAGE });
      for (const v of versions) {
        if (met.has(v.id) || v.lastUpdated <= since) continue; // `_since` is "after"; history's is "at or after"
        met.add(v.id);
        if (v.method !== 'DELETE' || v.version < 2) continue;
        const last = await ctx.store.resources.version(ctx.partition, type, v.id, v.version - 1);
        if (last?.content === undefined || !wouldExport(type, v.id, last.content, scope)) continue;
        const line = JSON.stringify({
          resourceType: 'Bundle',
          type: 'transaction',
          meta: { lastUpdated: v.lastUpdated },
          entry: [{ request: { method: 'DELETE', url: `${type}/${v.id}` } }],
        });
        count++;
        if (!out.write(`${line}\n`)) await once(out, 'drain');
      }
      const oldest = versions[versions.length - 1];
      if (versions.length < PAGE || !oldest) break;
      before = { lastUpdated: oldest.lastUpdated, type: oldest.type, id: oldest.id, version: oldest.version };
    }
  } finally {
    out.end();
    await once(out, 'close');
  }
  if (count === 0) await rm(path, { force: true });
  return count;
}

/** Whether the export would have returned this resource, had it not been deleted. */
function wouldExport(type: string, id: string, content: string, scope: DeletedScope): boolean {
  if (!scope.patients && !scope.restrictions) return true;
  const about = patientsIn(type, id, extractIndex(JSON.parse(content) as Record<string, unknown>)).map((p) =>
    p.slice('Patient/'.length),
  );
  const { patients, restrictions } = scope;
  if (patients && !about.some((p) => patients.has(p))) return false;
  // As restrictionFilter: any one restriction admits it; a patient restriction on a type outside the compartment
  // narrows nothing.
  return (
    !restrictions ||
    restrictions.some((r) => r.patient === undefined || !inPatientCompartment(type) || about.includes(r.patient))
  );
}
