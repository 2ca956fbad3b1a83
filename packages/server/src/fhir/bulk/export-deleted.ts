import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { FhirContext } from '../context.ts';
import { changedBetween, type ExportScope, wouldExport } from './export-changes.ts';

/** The file of a type's deletions: no resource type is spelled in lower case, so no type's file is called so. */
export const deletedFile = (type: string) => `deleted-${type}.ndjson`;
export const DELETED_FILE_RE = /^deleted-([A-Z][A-Za-z]+)\.ndjson$/;

/**
 * The `deleted` file of a `_since` export for one type (export.html#response---complete-status: SHALL be
 * populated when `_since` is given): one transaction Bundle per line, each with one DELETE entry, for every
 * resource of the type deleted after `since` and still deleted at `until` (the export's transactionTime) that
 * the export would have returned — judged on its last version before the deletion: in the compartment of one of
 * the export's patients, and within the token's patient restrictions. Returns how many it wrote (the file is
 * removed when none).
 */
export async function writeDeleted(
  ctx: FhirContext,
  type: string,
  window: { since: string; until: string | undefined },
  scope: ExportScope,
  dir: string,
): Promise<number> {
  const path = join(dir, deletedFile(type));
  const out = createWriteStream(path, { mode: 0o600 });
  let count = 0;
  try {
    for await (const v of changedBetween(ctx, type, window.since, window.until)) {
      if (v.method !== 'DELETE' || v.version < 2) continue;
      const last = await ctx.store.resources.version(ctx.partition, type, v.id, v.version - 1);
      if (last?.content === undefined) continue;
      // A proxy deleted with it (the same transaction, the same instant) counts as it was just before.
      const before = new Date(Date.parse(v.lastUpdated) - 1).toISOString();
      if (!(await wouldExport(ctx, { type, id: v.id, content: last.content }, scope, before))) continue;
      const line = JSON.stringify({
        resourceType: 'Bundle',
        type: 'transaction',
        meta: { lastUpdated: v.lastUpdated },
        entry: [{ request: { method: 'DELETE', url: `${type}/${v.id}` } }],
      });
      count++;
      if (!out.write(`${line}\n`)) await once(out, 'drain');
    }
  } finally {
    out.end();
    await once(out, 'close');
  }
  if (count === 0) await rm(path, { force: true });
  return count;
}
