import { bodyChunks, LineTooLongError, textLines } from '../../body-stream.js';
import { CarevaultError, TransportError } from '../../errors.js';
import type { FhirClient, RequestOptions } from '../../fhir-client.js';
import type { OperationOutcome, Resource } from '../../fhir-types.js';
import { pollStatus } from '../async-status.js';

/** The manifest a finished Bulk Data export answers with (export.html#response---complete-status). */
export interface ExportManifest {
  transactionTime: string;
  request: string;
  requiresAccessToken: boolean;
  output: { type: string; url: string; count?: number }[];
  /** Files of OperationOutcomes: errors, warnings and information about what was left out. */
  error: { type: string; url: string; count?: number }[];
  /** With `_since`: files of transaction Bundles whose DELETE entries name what was deleted since. */
  deleted?: { type: string; url: string; count?: number }[];
}

/** A resource a `_since` export says was deleted since (a DELETE entry of its `deleted` files). */
export interface ExportedDeletion {
  type: string;
  id: string;
  /** When, as the server said (the Bundle's `meta.lastUpdated`), if it did. */
  deletedAt?: string;
}

export interface BulkExportOptions {
  /** The whole server or vault (default), every patient, or one Group's members. */
  level?: 'system' | 'patient' | { group: string };
  /** `_type`: only these resource types. */
  types?: string[];
  /** `_since`: only resources changed after this instant. */
  since?: string | Date;
  /** `_typeFilter`: searches such as `Observation?status=final`. */
  typeFilters?: string[];
  /** `patient` (patient or group level): these patients only, as ids or `Patient/id`; sent as a POST. */
  patients?: string[];
  /** How long to wait for the export in all (default one hour); the job is left running past it. */
  timeoutMs?: number;
  /** Between status polls when the server names no Retry-After (default 1 s); never more than 60 s at once. */
  pollIntervalMs?: number;
  signal?: AbortSignal;
  /** Each `X-Progress` the server reports while the export runs. */
  onProgress?: (progress: string | undefined) => void;
}

export interface BulkExport {
  /** Where the job's status is (for `cancelExport`, or to poll again later). */
  statusUrl: string;
  manifest: ExportManifest;
}

/** The export could not be started, did not finish in time, or its files are not what the IG says. */
export class BulkExportError extends CarevaultError {
  constructor(
    message: string,
    readonly statusUrl?: string,
  ) {
    super(message);
  }
}

/**
 * Bulk Data export (Bulk Data Access IG 2.0) with one FhirClient: the kick-off (GET, or POST with a Parameters
 * body when patients are named), then the status URL polled as the server asks (Retry-After, else
 * `pollIntervalMs`) until it answers the manifest. 429 and 5xx on a poll are retried by the client like any
 * read; an export the server failed is its `FhirResponseError`.
 */
export async function bulkExport(client: FhirClient, o: BulkExportOptions = {}): Promise<BulkExport> {
  const level = o.level ?? 'system';
  const path =
    level === 'system'
      ? '$export'
      : level === 'patient'
        ? 'Patient/$export'
        : `Group/${encodeURIComponent(level.group)}/$export`;
  const params: [string, string][] = [];
  if (o.types?.length) params.push(['_type', o.types.join(',')]);
  if (o.since !== undefined) params.push(['_since', new Date(o.since).toISOString()]);
  for (const f of o.typeFilters ?? []) params.push(['_typeFilter', f]);
  const request: RequestOptions = { headers: { prefer: 'respond-async' }, ...(o.signal ? { signal: o.signal } : {}) };
  const kickOff = o.patients?.length
    ? await client.request('POST', path, exportParameters(params, o.patients), request)
    : await client.request(
        'GET',
        `${path}${params.length ? `?${new URLSearchParams(params)}` : ''}`,
        undefined,
        request,
      );
  const statusUrl = kickOff.headers.get('content-location');
  if (kickOff.status !== 202 || !statusUrl)
    throw new BulkExportError(`the kick-off answered ${kickOff.status} without a Content-Location to poll`);

  const status = await pollStatus<ExportManifest | undefined>(client, statusUrl, {
    timeoutMs: o.timeoutMs ?? 3_600_000,
    pollIntervalMs: o.pollIntervalMs ?? 1000,
    signal: o.signal,
    onProgress: o.onProgress,
    onTimeout: (url) => new BulkExportError(`the export did not finish in time; its status is at ${url}`, url),
  });
  return { statusUrl, manifest: checkManifest(status.body, statusUrl) };
}

function exportParameters(params: [string, string][], patients: string[]) {
  const parameter: Record<string, unknown>[] = params.map(([name, value]) =>
    name === '_since' ? { name, valueInstant: value } : { name, valueString: value },
  );
  for (const p of patients)
    parameter.push({ name: 'patient', valueReference: { reference: p.includes('/') ? p : `Patient/${p}` } });
  return { resourceType: 'Parameters', parameter };
}

function checkManifest(body: unknown, statusUrl: string): ExportManifest {
  const m = body as Partial<ExportManifest> | undefined;
  if (typeof m?.transactionTime !== 'string' || !Array.isArray(m.output))
    throw new BulkExportError(`${statusUrl} answered 200 without an export manifest`, statusUrl);
  return { ...m, error: m.error ?? [] } as ExportManifest;
}

/** Times a file's download may break off and be resumed from the line it broke at. */
const RESUMES = 5;

/**
 * The resources of a finished export, file by file (those of `type` only, when given), streamed: no file is
 * held in memory. Files that need the token are fetched with the client (its retries, its token, never to
 * another origin); the others, which the IG allows on other storage, without credentials. A download that
 * breaks off is asked for again and continues after the last line it gave (an export's files do not change).
 */
export async function* exportedResources(
  client: FhirClient,
  manifest: ExportManifest,
  type?: string,
  o: RequestOptions = {},
): AsyncGenerator<Resource> {
  const files = manifest.output.filter((f) => type === undefined || f.type === type);
  yield* fileLines(client, manifest.requiresAccessToken, files, o);
}

/**
 * The OperationOutcomes of a finished export's error files (its `error` array): what the server left out and
 * why, such as a named patient who is not in the group, or a parameter it ignored under `handling=lenient`.
 */
export async function* exportErrors(
  client: FhirClient,
  manifest: ExportManifest,
  o: RequestOptions = {},
): AsyncGenerator<OperationOutcome> {
  const files = manifest.error.filter((f) => f.type === 'OperationOutcome');
  yield* fileLines(client, manifest.requiresAccessToken, files, o) as AsyncGenerator<OperationOutcome>;
}

async function* fileLines(
  client: FhirClient,
  requiresAccessToken: boolean,
  files: { type: string; url: string }[],
  o: RequestOptions,
): AsyncGenerator<Resource> {
  for (const file of files) {
    let given = 0;
    for (let resume = 0; ; resume++) {
      const body = requiresAccessToken
        ? (await client.stream(file.url, NDJSON, o)).body
        : await publicBody(file.url, o.signal);
      let n = 0;
      try {
        for await (const line of textLines(body, MAX_LINE_CHARS)) {
          if (++n <= given) continue;
          given = n;
          if (!line.trim()) continue;
          yield checkLine(line, n, file);
        }
        break;
      } catch (err) {
        if (err instanceof LineTooLongError) {
          throw new BulkExportError(
            `${file.url} line ${err.line} is longer than ${MAX_LINE_CHARS / 1024 / 1024} M characters: no resource is`,
          );
        }
        if (!(err instanceof TransportError) || resume >= RESUMES || o.signal?.aborted) throw err;
      }
    }
  }
}

const NDJSON = 'application/fhir+ndjson';
/** One resource of a file may be this long; a server that sends a line without end is not followed further. */
const MAX_LINE_CHARS = 64 * 1024 * 1024;

function checkLine(line: string, n: number, file: { type: string; url: string }): Resource {
  let resource: Resource;
  try {
    resource = JSON.parse(line) as Resource;
  } catch {
    throw new BulkExportError(`${file.url} line ${n} is not JSON`);
  }
  if (resource?.resourceType !== file.type) throw new BulkExportError(`${file.url} line ${n} is not a ${file.type}`);
  return resource;
}

async function publicBody(url: string, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
  let res: Response;
  try {
    res = await fetch(url, signal ? { signal } : {});
  } catch (err) {
    if (signal?.aborted) throw err;
    throw new TransportError(`GET ${url} failed: ${(err as Error).message}`, undefined, { cause: err });
  }
  if (!res.ok) throw new BulkExportError(`${url} answered ${res.status}`);
  return bodyChunks(res, url);
}

/** The transaction Bundles of a finished `_since` export's `deleted` files, as the server wrote them. */
export async function* deletedBundles(
  client: FhirClient,
  manifest: ExportManifest,
  o: RequestOptions = {},
): AsyncGenerator<Resource> {
  const files = (manifest.deleted ?? []).filter((f) => f.type === 'Bundle');
  for await (const bundle of fileLines(client, manifest.requiresAccessToken, files, o)) {
    if ((bundle as { type?: string }).type !== 'transaction')
      throw new BulkExportError(
        `a line of a deleted file is a Bundle of type ${(bundle as { type?: string }).type}, not transaction`,
      );
    yield bundle;
  }
}

/**
 * What a finished `_since` export says was deleted since (its `deleted` array): one item per DELETE entry, so
 * that a copy kept up to date by incremental exports can remove them too.
 */
export async function* exportDeletions(
  client: FhirClient,
  manifest: ExportManifest,
  o: RequestOptions = {},
): AsyncGenerator<ExportedDeletion> {
  for await (const bundle of deletedBundles(client, manifest, o)) {
    const b = bundle as { meta?: { lastUpdated?: string }; entry?: { request?: { method?: string; url?: string } }[] };
    for (const e of b.entry ?? []) {
      if (e.request?.method !== 'DELETE') continue;
      const m = /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(e.request.url ?? '');
      if (!m) throw new BulkExportError(`a DELETE entry of a deleted file names "${e.request.url}", not Type/id`);
      yield {
        type: m[1] as string,
        id: m[2] as string,
        ...(b.meta?.lastUpdated ? { deletedAt: b.meta.lastUpdated } : {}),
      };
    }
  }
}

/** DELETE on the status URL: the server stops the export (if it still runs) and removes its files. */
export async function cancelExport(client: FhirClient, statusUrl: string, o?: RequestOptions): Promise<void> {
  await client.request('DELETE', statusUrl, undefined, o);
}
