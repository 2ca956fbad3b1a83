import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuditTrail } from '../../audit/trail.ts';
import type { Store } from '../../store/types.ts';
import type { Interaction, Restriction } from '../../vault/policy.ts';
import { decide } from '../../vault/policy.ts';
import { type AsyncJob, AsyncJobs, jobContext, loadAccess, ownedBy, storeAccess } from '../async-jobs.ts';
import { auditAccess } from '../audit.ts';
import { insufficientScope } from '../bearer.ts';
import type { FhirContext } from '../context.ts';
import { FhirError, operationOutcome } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { operationParams } from '../operations/operation-params.ts';
import { ID_RE } from '../resource-types.ts';
import { assertVisible } from '../search/restrictions.ts';
import { DELETED_FILE_RE, deletedFile } from './export-deleted.ts';
import { type ExportRequest, parseExportRequest } from './export-request.ts';
import { ERROR_FILE, exportTypes, typeSearches, writeExport } from './export-run.ts';

type Params = { partition: string; id?: string; job?: string; file?: string };

/** An export's files are kept this long after it was asked for, then removed with its job. */
export const EXPORT_RETENTION_MS = 24 * 3600_000;
/** Each export is a copy of (part of) a vault on disk; this many fit one a day for an hourly export. */
const MAX_KEPT_EXPORTS = 24;
const NDJSON = 'application/fhir+ndjson';
/** The status URL's Retry-After while a job runs; a poll sooner than half of it after the last is too often (E18). */
const POLL_SECONDS = 1;
const MIN_POLL_MS = (POLL_SECONDS * 1000) / 2;

interface ExportJob extends AsyncJob {
  /** The kick-off request, for the manifest's `request`. */
  url: string;
  /** Patients the export was asked for by name, for the audit of every download. */
  patients?: string[] | undefined;
  group?: string | undefined;
  /**
   * The manifest's `transactionTime`: taken from the store when no write was between its stamp and its commit,
   * so every resource changed up to it is in this export and an export `_since` it misses none changed later.
   * (The kick-off's acceptance time was not: a write stamped before it could commit after the job had read.)
   * Jobs accepted before it was kept use acceptedAt.
   */
  transactionTime?: string | undefined;
}

export interface BulkExportOptions {
  context(req: FastifyRequest): Promise<FhirContext>;
  allow(ctx: FhirContext, type: string, interaction: Interaction): Restriction[] | undefined;
  store: Store;
  audit: AuditTrail;
  /** `<data-dir>/jobs`: exports go to its `exports/`. */
  jobsDir: string;
  log: { error(o: object, msg: string): void };
}

/**
 * Bulk Data export (Bulk Data Access IG 2.0, export.html): `$export` at the vault, `Patient/$export` and
 * `Group/[id]/$export` start a job (202 + Content-Location); `$export-status/{job}` answers 202 while it runs,
 * then the manifest; its files are NDJSON at `$export-file/{job}/{Type}.ndjson`; DELETE on the status URL
 * cancels or removes it. Only the client that asked, in the vault it asked in, learns anything about a job,
 * and every download is audited as the disclosure it is.
 */
export function bulkExport(app: FastifyInstance, o: BulkExportOptions): void {
  const jobs: AsyncJobs<ExportJob> = new AsyncJobs<ExportJob>(
    join(o.jobsDir, 'exports'),
    async (job, text) => {
      const { files, deleted, notes } = await writeExport(
        jobContext(job, o.store, o.audit),
        JSON.parse(text) as ExportRequest,
        jobs.outputDir(job.id),
        job.transactionTime,
      );
      const fileUrl = (name: string) => `${job.base}/$export-file/${job.id}/${name}`;
      const manifest = {
        transactionTime: job.transactionTime ?? job.acceptedAt,
        request: job.url,
        requiresAccessToken: true,
        output: files.map((f) => ({ type: f.type, url: fileUrl(`${f.type}.ndjson`), count: f.count })),
        error: notes.length > 0 ? [{ type: 'OperationOutcome', url: fileUrl(ERROR_FILE), count: notes.length }] : [],
        // With `_since`: what was deleted since, per type (transaction Bundles of DELETE entries).
        ...(deleted
          ? { deleted: deleted.map((f) => ({ type: 'Bundle', url: fileUrl(deletedFile(f.type)), count: f.count })) }
          : {}),
      };
      return { status: 200, body: JSON.stringify(manifest) };
    },
    o.log,
  );
  jobs.start();
  app.addHook('onClose', async () => jobs.stop());

  /** Exports past their retention are removed when the next one is asked for; a client keeps MAX_KEPT_EXPORTS. */
  const admit = async (ctx: FhirContext) => {
    const mine = (await jobs.sweep(EXPORT_RETENTION_MS)).filter((j) => ownedBy(j, ctx));
    if (mine.length < MAX_KEPT_EXPORTS) return;
    const oldest = Math.min(...mine.map((j) => Date.parse(j.acceptedAt)));
    const wait = Math.max(1, Math.ceil((oldest + EXPORT_RETENTION_MS - Date.now()) / 1000));
    throw new FhirError(
      429,
      'throttled',
      `this client keeps ${mine.length} exports in this vault (at most ${MAX_KEPT_EXPORTS}): DELETE one at its status URL, or wait until one expires`,
      { 'retry-after': String(wait) },
    );
  };

  const kickOff =
    (level: ExportRequest['level']) => async (req: FastifyRequest<{ Params: Params }>, reply: FastifyReply) => {
      const ctx = await o.context(req);
      const prefer = String(req.headers.prefer ?? '');
      if (!/\brespond-async\b/.test(prefer))
        throw new FhirError(400, 'invalid', '$export runs asynchronously: send Prefer: respond-async');
      // The IG's kick-off names the format of its OperationOutcome; a client that names none is told to.
      if (!req.headers.accept)
        throw new FhirError(400, 'invalid', 'send Accept: application/fhir+json with the $export kick-off');
      let group: string | undefined;
      let groupRestrictions: Restriction[] | undefined;
      if (level === 'group') {
        group = req.params.id as string;
        if (!ID_RE.test(group)) throw new FhirError(400, 'value', 'invalid Group id');
        groupRestrictions = o.allow(ctx, 'Group', 'read');
      }
      const request = parseExportRequest(level, group, operationParams(req), /\bhandling=lenient\b/.test(prefer));
      // What can be judged now is, so that the client hears of it from the kick-off and not from a failed job.
      for (const type of exportTypes(ctx, request)) typeSearches(ctx, type, request);
      if (group && (await ctx.store.resources.current(ctx.partition, 'Group', group))?.content === undefined)
        throw new FhirError(404, 'not-found', `Group/${group} not found`);
      // The members come from the Group as a read of it would show it: a Group outside a granular scope is not read.
      if (group) await assertVisible(ctx, 'Group', group, groupRestrictions);
      await admit(ctx);
      const raw = req.raw.url ?? '';
      // The request as the client made it, from the vault's base on (the manifest's `request`).
      const url = `${ctx.base}${raw.slice(raw.indexOf(`/${ctx.partition}/`) + ctx.partition.length + 1)}`;
      await auditAccess(ctx, 'operation', {
        objects: group ? [`Group/${group}`] : undefined,
        patients: request.patients?.map((p) => `Patient/${p}`),
        query: { raw: url.slice(ctx.base.length + 1), description: '$export' },
      });
      const job = await jobs.accept(
        {
          partition: ctx.partition,
          base: ctx.base,
          access: storeAccess(ctx.access),
          who: ctx.who,
          url,
          patients: request.patients,
          group,
          transactionTime: new Date(await ctx.store.resources.committedThrough()).toISOString(),
        },
        Readable.from([JSON.stringify(request)]),
      );
      return reply
        .code(202)
        .header('content-location', `${ctx.base}/$export-status/${job.id}`)
        .type(FHIR_JSON)
        .send(operationOutcome('information', 'informational', 'accepted: poll Content-Location for the manifest'));
    };
  for (const [path, level] of [
    ['/:partition/$export', 'system'],
    ['/:partition/Patient/$export', 'patient'],
    ['/:partition/Group/:id/$export', 'group'],
  ] as const) {
    app.get<{ Params: Params }>(path, kickOff(level));
    app.post<{ Params: Params }>(path, kickOff(level));
  }

  /** The caller's own job, or 404 whether it does not exist, belongs to someone else or has expired. */
  const ownJob = async (req: FastifyRequest<{ Params: Params }>) => {
    const ctx = await o.context(req);
    const job = await jobs.get(req.params.job as string);
    if (!job || !ownedBy(job, ctx)) throw new FhirError(404, 'not-found', 'no such export');
    if (job.result && Date.now() - Date.parse(job.acceptedAt) > EXPORT_RETENTION_MS) {
      await jobs.remove(job.id);
      throw new FhirError(404, 'not-found', 'no such export (expired)');
    }
    return { ctx, job };
  };

  app.get<{ Params: Params }>('/:partition/$export-status/:job', async (req, reply) => {
    const { job } = await ownJob(req);
    if (!job.result) {
      const wait = await jobs.untilNextPoll(job.id, MIN_POLL_MS);
      if (wait > 0)
        throw new FhirError(429, 'throttled', 'the export status is polled too often; wait as Retry-After says', {
          'retry-after': String(Math.ceil(wait / 1000)),
        });
      return reply
        .code(202)
        .header('x-progress', job.state === 'queued' ? 'queued' : 'in progress')
        .header('retry-after', String(POLL_SECONDS))
        .send();
    }
    const expires = new Date(Date.parse(job.acceptedAt) + EXPORT_RETENTION_MS).toUTCString();
    return reply
      .code(job.result.status)
      .header('expires', expires)
      .type(job.result.status === 200 ? 'application/json' : FHIR_JSON)
      .send(job.result.body);
  });

  app.delete<{ Params: Params }>('/:partition/$export-status/:job', async (req, reply) => {
    const { job } = await ownJob(req);
    await jobs.remove(job.id);
    return reply
      .code(202)
      .type(FHIR_JSON)
      .send(operationOutcome('information', 'informational', 'the export and its files are removed'));
  });

  app.get<{ Params: Params }>('/:partition/$export-file/:job/:file', async (req, reply) => {
    const { ctx, job } = await ownJob(req);
    const name = req.params.file as string;
    const manifest =
      job.result?.status === 200
        ? (JSON.parse(job.result.body) as { output: { type: string }[]; error: unknown[]; deleted?: { url: string }[] })
        : undefined;
    const deletions = DELETED_FILE_RE.exec(name)?.[1];
    const type = /^([A-Z][A-Za-z]+)\.ndjson$/.exec(name)?.[1] ?? deletions;
    const errors = name === ERROR_FILE && manifest !== undefined && manifest.error.length > 0;
    const listed = deletions
      ? manifest?.deleted?.some((f) => f.url.endsWith(`/${name}`))
      : manifest?.output.some((f) => f.type === type);
    if (!errors && (!type || !listed)) throw new FhirError(404, 'not-found', 'no such file');
    if (type) {
      // The file was written under the access the kick-off had; the token now must allow as much for its type.
      const now = o.allow(ctx, type, 'search-type');
      const then = decide(loadAccess(job.access), type, 'search-type');
      if (JSON.stringify(now ?? null) !== JSON.stringify((then.allowed && then.restrictions) || null))
        throw insufficientScope(`the access to ${type} changed since the export was asked for; start a new one`);
    }
    const stream = createReadStream(join(jobs.outputDir(job.id), name));
    // Opened before the event is written: a file removed meanwhile is a 404, not an audited disclosure.
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', () => reject(new FhirError(404, 'not-found', 'no such file')));
    });
    try {
      // The error file says which named patients are in the group or the vault: audited like the data.
      await auditAccess(ctx, 'operation', {
        objects: job.group ? [`Group/${job.group}`] : undefined,
        patients: job.patients?.map((p) => `Patient/${p}`),
        query: {
          raw: `$export-file/${job.id}/${name}`,
          description: `$export ${errors ? 'errors' : deletions ? `deleted ${type}` : type}`,
        },
      });
    } catch (err) {
      stream.destroy();
      throw err;
    }
    return reply.type(NDJSON).send(stream);
  });
}
