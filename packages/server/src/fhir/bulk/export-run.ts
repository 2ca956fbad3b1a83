import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SearchFilter, SearchQuery } from '../../store/types.ts';
import { compartmentFilter, inPatientCompartment } from '../../vault/compartment.ts';
import { decide } from '../../vault/policy.ts';
import { insufficientScope } from '../bearer.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { type GroupMember, groupMembers, memberDuring, memberPatient } from '../group-members.ts';
import { RESOURCE_TYPES } from '../resource-types.ts';
import { binaryProxyFilter } from '../search/binary-proxy.ts';
import { parseSearch } from '../search/parse.ts';
import { chainsInScope, restrictionFilter } from '../search/restrictions.ts';
import { elementsOnly } from '../search/subset.ts';
import { changedBetween, type ExportScope, narrowedByQuery, versionAt, wouldExport } from './export-changes.ts';
import { writeDeleted } from './export-deleted.ts';
import { type ExportRequest, elementsFor } from './export-request.ts';

const PAGE = 1000;
/** Patients per compartment query: the reference filter lists them all. */
const PATIENTS_PER_QUERY = 200;

export interface ExportFile {
  type: string;
  count: number;
}

/**
 * The types an export writes: those asked for, or every type the client may search (at patient and group
 * level, the Patient compartment's). A type asked for that the token may not search is refused, not skipped.
 */
export function exportTypes(ctx: FhirContext, request: ExportRequest): string[] {
  if (request.types.length > 0) {
    for (const type of request.types) {
      const d = decide(ctx.access, type, 'search-type');
      if (!d.allowed) throw insufficientScope(`_type ${type}: ${d.reason}`);
    }
    return request.types;
  }
  return [...RESOURCE_TYPES]
    .filter((t) => request.level === 'system' || inPatientCompartment(t))
    .filter((t) => decide(ctx.access, t, 'search-type').allowed)
    .sort();
}

/**
 * The searches of one type (its `_typeFilter`s, OR-ed, or all of it), parsed; a bad one is the client's error.
 * `asOf`: only resources last changed up to that instant.
 */
export function typeSearches(
  ctx: FhirContext,
  type: string,
  request: ExportRequest,
  asOf?: string | undefined,
): SearchQuery[] {
  const filters = request.typeFilters[type] ?? [''];
  return filters.map((q) => {
    const params = [...new URLSearchParams(q)];
    if (request.since) params.push(['_lastUpdated', `gt${request.since}`]);
    if (asOf) params.push(['_lastUpdated', `le${asOf}`]);
    let parsed: ReturnType<typeof parseSearch>;
    try {
      parsed = parseSearch(type, params, { base: ctx.base, strict: true });
    } catch (err) {
      if (err instanceof FhirError) throw new FhirError(400, err.code, `_typeFilter ${type}?${q}: ${err.diagnostics}`);
      throw err;
    }
    const control = params.find(([n]) =>
      /^_(count|offset|cursor|sort|include|revinclude|summary|elements|total)/.test(n),
    );
    if (control)
      throw new FhirError(400, 'invalid', `_typeFilter ${type}?${q}: ${control[0]} has no place in an export`);
    return { ...parsed.query, filters: chainsInScope(ctx.access, ctx.base, parsed.query.filters) };
  });
}

/** A message for the export's error file (export.html#response---complete-status: errors, warnings, information). */
export interface ExportNote {
  severity: 'error' | 'warning' | 'information';
  code: string;
  diagnostics: string;
}

/**
 * The patients of a patient- or group-level export: those named, the group's active members, or every Patient.
 * What is left out, and why, goes to `notes`: a named patient who is not in the vault or not in the group
 * (export.html#query-parameters, `patient`), members that are inactive or not patients.
 */
export async function exportPatients(
  ctx: FhirContext,
  request: ExportRequest,
  notes: ExportNote[],
  asOf?: string | undefined,
): Promise<string[] | undefined> {
  if (request.level === 'system') return undefined;
  let members: string[] | undefined;
  if (request.level === 'group') {
    const member = await groupMembers(ctx, request.group as string);
    const now = Date.now();
    const memberNow = (m: GroupMember) => memberDuring(m, now, now + 1);
    members = member.flatMap((m) => (memberNow(m) ? (memberPatient(m) ?? []) : []));
    const inactive = member.filter((m) => !memberNow(m) && memberPatient(m)).length;
    const others = member.filter((m) => !memberPatient(m)).length;
    if (inactive > 0)
      notes.push(
        info(
          `${inactive} member(s) of Group/${request.group} are inactive or outside their membership period: not exported (Group.member.inactive, Group.member.period)`,
        ),
      );
    if (others > 0)
      notes.push(info(`${others} member(s) of Group/${request.group} are not Patient references: not exported`));
  }
  if (request.patients) {
    const named = [...new Set(request.patients)];
    if (members) {
      const absent = named.filter((p) => !members.includes(p));
      for (const p of absent)
        notes.push(
          warning(`Patient/${p} is not an active member of Group/${request.group}: nothing of it is exported`),
        );
      return named.filter((p) => members.includes(p));
    }
    // Said only to a client that may read any Patient here: to it, a read would answer 404 as well.
    const read = decide(ctx.access, 'Patient', 'read');
    if (read.allowed && !read.restrictions) {
      for (const p of named) {
        if ((await ctx.store.resources.current(ctx.partition, 'Patient', p))?.content === undefined)
          notes.push(warning(`Patient/${p} is not in this vault: nothing of it is exported`));
      }
    }
    return named;
  }
  if (members) return [...new Set(members)];
  const all: string[] = [];
  for await (const page of pages(ctx, { type: 'Patient', filters: [], sort: [], limit: PAGE, offset: 0, total: false }))
    all.push(...page.map((r) => r.id));
  // Patients deleted since the transactionTime were patients then: their compartments are exported as they were.
  for await (const v of asOf ? changedBetween(ctx, 'Patient', asOf, undefined) : []) {
    if (v.method !== 'DELETE') continue;
    const then = await versionAt(ctx, 'Patient', v.id, asOf as string);
    if (then && then.method !== 'DELETE') all.push(v.id);
  }
  return all;
}

const info = (diagnostics: string): ExportNote => ({ severity: 'information', code: 'informational', diagnostics });
const warning = (diagnostics: string): ExportNote => ({ severity: 'warning', code: 'not-found', diagnostics });

async function* pages(ctx: FhirContext, query: SearchQuery) {
  let after: SearchQuery['after'];
  for (;;) {
    const { matches } = await ctx.store.resources.search(ctx.partition, { ...query, limit: PAGE, offset: 0, after });
    if (matches.length > 0) yield matches;
    const last = matches[matches.length - 1];
    if (matches.length < PAGE || !last?.lastUpdated) return;
    after = { lastUpdated: last.lastUpdated, id: last.id };
  }
}

/**
 * Writes one NDJSON file per type with matches into `dir` (export.html#bulk-data-output-file-request): every
 * match in the order of the vault's time index, paged by position so that a large vault is never held in memory.
 *
 * `asOf` (the manifest's transactionTime): the response SHOULD NOT include resources modified after it and
 * SHALL include those modified up to it (export.html#response---complete-status). Resources last changed up to
 * it are read from the index; those changed since (while the job waited or ran) are written afterwards as the
 * version they had then — or not at all if they did not exist then, while one deleted since is written as it
 * was. A type narrowed by a query is read as it is (`narrowedByQuery`); the error file says so.
 */
export async function writeExport(
  ctx: FhirContext,
  request: ExportRequest,
  dir: string,
  asOf?: string | undefined,
): Promise<{ files: ExportFile[]; deleted: ExportFile[] | undefined; notes: ExportNote[] }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const notes: ExportNote[] = (request.ignored ?? []).map((name) => ({
    severity: 'warning',
    code: 'not-supported',
    diagnostics: `the parameter ${name} was ignored (Prefer: handling=lenient): this server does not support it`,
  }));
  const patients = await exportPatients(ctx, request, notes, asOf);
  const files: ExportFile[] = [];
  const deleted: ExportFile[] | undefined = request.since ? [] : undefined;
  const patientSet = patients && new Set(patients);
  for (const type of exportTypes(ctx, request)) {
    const d = decide(ctx.access, type, 'search-type');
    const restriction = d.allowed ? restrictionFilter(ctx, type, d.restrictions) : undefined;
    const scope: ExportScope = { patients: patientSet, restrictions: d.allowed ? d.restrictions : undefined };
    // A Binary narrowed by its proxy's scopes is narrowed by a query on the proxy: judged as it is now too.
    const byProxy =
      d.allowed && type === 'Binary' && binaryProxyFilter(ctx.access, ctx.base, d.restrictions) !== undefined;
    const byQuery = narrowedByQuery(scope.restrictions, request.typeFilters[type] !== undefined || byProxy);
    const until = byQuery ? undefined : asOf;
    const chunks: (SearchFilter | undefined)[] = [];
    if (patients === undefined) chunks.push(undefined);
    for (let i = 0; patients && i < patients.length; i += PATIENTS_PER_QUERY) {
      const chunk = compartmentFilter(type, patients.slice(i, i + PATIENTS_PER_QUERY));
      if (!chunk) throw new Error(`${type} is not in the Patient compartment`);
      chunks.push(chunk);
    }
    const searches = typeSearches(ctx, type, request, until);
    const elements = elementsFor(request, type);
    // One resource can match two filters or be in two patients' compartments: it is written once.
    const seen = searches.length > 1 || chunks.length > 1 ? new Set<string>() : undefined;
    const path = join(dir, `${type}.ndjson`);
    const out = createWriteStream(path, { mode: 0o600 });
    let count = 0;
    try {
      for (const search of searches) {
        for (const chunk of chunks) {
          const filters = [...search.filters, ...(chunk ? [chunk] : []), ...(restriction ? [restriction] : [])];
          for await (const page of pages(ctx, { ...search, filters })) {
            for (const r of page) {
              if (seen?.has(r.id)) continue;
              seen?.add(r.id);
              count++;
              const line = elements ? elementsOnly(r.content, type, elements) : r.content;
              if (!out.write(`${line}\n`)) await once(out, 'drain');
            }
          }
        }
      }
      // Changed after `until`: as they were then. None of them was read above (their current version is later).
      for await (const changed of until ? changedBetween(ctx, type, until, undefined) : []) {
        const then = await versionAt(ctx, type, changed.id, until as string);
        if (then?.content === undefined || then.method === 'DELETE') continue;
        if (request.since && then.lastUpdated <= request.since) continue;
        if (!(await wouldExport(ctx, { type, id: then.id, content: then.content }, scope, until as string))) continue;
        count++;
        const line = elements ? elementsOnly(then.content, type, elements) : then.content;
        if (!out.write(`${line}\n`)) await once(out, 'drain');
      }
    } finally {
      out.end();
      await once(out, 'close');
    }
    if (count === 0) await rm(path, { force: true });
    else files.push({ type, count });
    if (byQuery && asOf) {
      notes.push({
        severity: 'information',
        code: 'informational',
        diagnostics: `${type} is exported as it was when read, not as of the transactionTime: its export is narrowed by a query (_typeFilter, or the token's scope) that an older version cannot be checked against`,
      });
    }
    if (!request.since || !deleted) continue;
    if (!byQuery) {
      const gone = await writeDeleted(ctx, type, { since: request.since, until: asOf }, scope, dir);
      if (gone > 0) deleted.push({ type, count: gone });
    } else {
      notes.push({
        severity: 'warning',
        code: 'not-supported',
        diagnostics: `deletions of ${type} since ${request.since} are not listed: the export of ${type} is narrowed by a query (_typeFilter, or the token's scope) that a deleted resource can no longer be checked against`,
      });
    }
  }
  if (notes.length > 0) {
    const lines = notes.map((issue) => `${JSON.stringify({ resourceType: 'OperationOutcome', issue: [issue] })}\n`);
    await writeFile(join(dir, ERROR_FILE), lines.join(''), { mode: 0o600 });
  }
  return { files, deleted, notes };
}

/** The error file's name: no resource type is spelled in lower case, so no type's file can be called so. */
export const ERROR_FILE = 'errors.ndjson';
