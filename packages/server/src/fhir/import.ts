import { createReadStream, readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { type EntryRequest, transactionEntries } from './bundle/entries.ts';
import { runTransaction } from './bundle/transaction.ts';
import type { FhirContext } from './context.ts';
import { FhirError } from './errors.ts';
import { parseFhirJson } from './json-body.ts';
import { boundedLines, LineTooLong } from './ndjson-lines.ts';

/** Resources others point to are loaded first, so conditional references resolve (Synthea, Bulk Data). */
const PRIORITY = ['Organization', 'Location', 'Practitioner', 'PractitionerRole', 'Patient'];
const CHUNK = 500;
/**
 * One NDJSON resource may be this long (four times what a request body may be); a transaction of NDJSON lines
 * ends at CHUNK resources or at CHUNK_BYTES of them, whichever comes first, so large resources do not pile up.
 */
const MAX_LINE_BYTES = 64 * 1024 * 1024;
const CHUNK_BYTES = 32 * 1024 * 1024;

export interface ImportProgress {
  fileStarted(file: string, resources: number | undefined): void;
  resourcesDone(n: number): void;
  /** Awaited after each transaction: where a long import does the store's upkeep between its writes. */
  committed?(): Promise<void>;
}

export interface ImportReport {
  partition: string;
  files: number;
  written: Record<string, number>;
  total: number;
  seconds: number;
}

export class ImportError extends Error {}

function rank(types: string[]): number {
  const ranks = types.map((t) => (PRIORITY.includes(t) ? PRIORITY.indexOf(t) : PRIORITY.length));
  return Math.max(...ranks, 0);
}

interface Source {
  file: string;
  kind: 'bundle' | 'ndjson';
  rank: number;
  /** The parsed Bundle when the first pass could keep it (KEPT_CHARS), else read again at its turn. */
  bundle?: Record<string, unknown> | undefined;
}

/**
 * Every file is read before any is imported (a file that is no Bundle stops the import before it wrote), and
 * Bundles are kept from that pass only up to this much JSON: kept whole, 1,800 Synthea files of 539 MB held
 * 1.9 GB to the end, and a population of a few GB ran out of heap before its first write. The rest are parsed
 * again at their turn (≈ 6 s of CPU per 539 MB here, ≈ 8 % of importing them).
 */
const KEPT_CHARS = 32 * 1024 * 1024;

function inspector() {
  let kept = 0;
  return (file: string): Source => {
    if (/\.ndjson$/i.test(file)) {
      const type = /^([A-Z][A-Za-z]+)[.]/.exec(basename(file))?.[1];
      return { file, kind: 'ndjson', rank: rank(type ? [type] : ['?']) };
    }
    const { bundle, chars } = readBundle(file);
    // Only the order of files is decided here; a malformed entry is refused by the transaction rules, by its index.
    const entries = Array.isArray(bundle.entry) ? bundle.entry : [];
    const typeOf = (e: unknown) => (isObject(e) && isObject(e.resource) ? e.resource.resourceType : undefined);
    const types = [...new Set(entries.map((e) => String(typeOf(e) ?? '?')))];
    const keep = kept + chars <= KEPT_CHARS;
    if (keep) kept += chars;
    return { file, kind: 'bundle', rank: rank(types), ...(keep ? { bundle } : {}) };
  };
}

/**
 * A Bundle file is parsed whole, as one string: past this V8 cannot hold it (its longest string is just above
 * 512 MiB), and the file is refused by its size before any of it is read.
 */
const MAX_BUNDLE_BYTES = 512 * 1024 * 1024;

function readBundle(file: string): { bundle: Record<string, unknown>; chars: number } {
  const size = statSync(file).size;
  if (size > MAX_BUNDLE_BYTES) {
    throw new ImportError(
      `${file}: ${Math.round(size / 1024 / 1024)} MiB is more than one Bundle file may be (512 MiB); split it into ` +
        'several Bundles, or write its resources as NDJSON (one per line)',
    );
  }
  let bundle: unknown;
  let chars = 0;
  try {
    const text = readFileSync(file, 'utf8');
    chars = text.length;
    bundle = parseFhirJson(text, 'the file');
  } catch (err) {
    if (err instanceof FhirError) throw new ImportError(`${file}: ${err.diagnostics}`);
    throw new ImportError(`${file}: not valid JSON (${(err as Error).message})`);
  }
  if (!isObject(bundle) || bundle.resourceType !== 'Bundle') {
    throw new ImportError(`${file}: expected a Bundle or an .ndjson file`);
  }
  return { bundle, chars };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * A batch of POSTs with urn:uuid fullUrls (as Synthea writes them) becomes one transaction of
 * PUT Type/id, keeping the generator's ids so references between files stay valid.
 */
function asTransaction(bundle: unknown): unknown {
  const b = bundle as { type?: string; entry?: unknown };
  if (!Array.isArray(b.entry)) return { ...b, type: 'transaction' };
  return {
    ...b,
    type: 'transaction',
    entry: b.entry.map((e: unknown) => {
      if (!isObject(e)) return e;
      const resource = e.resource as { resourceType?: string; id?: string } | undefined;
      const request = e.request as { method?: string } | undefined;
      if (request?.method === 'POST' && resource?.id && resource.resourceType) {
        return { ...e, request: { method: 'PUT', url: `${resource.resourceType}/${resource.id}` } };
      }
      return e;
    }),
  };
}

function count(report: ImportReport, entries: EntryRequest[]): void {
  for (const e of entries) {
    if (e.method === 'GET' || e.method === 'HEAD' || e.method === 'DELETE') continue;
    report.written[e.type] = (report.written[e.type] ?? 0) + 1;
    report.total++;
  }
}

async function importBundle(
  ctx: FhirContext,
  src: Source,
  report: ImportReport,
  progress: ImportProgress,
): Promise<void> {
  const bundle = src.bundle ?? readBundle(src.file).bundle;
  // Imported Bundles are not held to the end of the import.
  src.bundle = undefined;
  const entries = transactionEntries(asTransaction(bundle), ctx.base);
  progress.fileStarted(src.file, entries.length);
  await runTransaction(ctx, entries, false);
  count(report, entries);
  progress.resourcesDone(entries.length);
  await progress.committed?.();
}

async function importNdjson(
  ctx: FhirContext,
  src: Source,
  report: ImportReport,
  progress: ImportProgress,
): Promise<void> {
  progress.fileStarted(src.file, undefined);
  let chunk: unknown[] = [];
  let chunkBytes = 0;
  let lineNo = 0;
  const flush = async () => {
    if (chunk.length === 0) return;
    const entries = transactionEntries({ resourceType: 'Bundle', type: 'transaction', entry: chunk }, ctx.base);
    await runTransaction(ctx, entries, false);
    count(report, entries);
    progress.resourcesDone(entries.length);
    await progress.committed?.();
    chunk = [];
    chunkBytes = 0;
  };
  try {
    for await (const line of boundedLines(createReadStream(src.file), MAX_LINE_BYTES)) {
      lineNo++;
      if (line.trim() === '') continue;
      let resource: unknown;
      try {
        resource = parseFhirJson(line, 'the line');
      } catch (err) {
        throw new ImportError(
          `${src.file}:${lineNo}: ${err instanceof FhirError ? err.diagnostics : 'not valid JSON'}`,
        );
      }
      if (!isObject(resource) || typeof resource.resourceType !== 'string' || !resource.resourceType) {
        throw new ImportError(`${src.file}:${lineNo}: not a resource (no resourceType)`);
      }
      chunk.push({
        resource,
        request: resource.id
          ? { method: 'PUT', url: `${resource.resourceType}/${resource.id}` }
          : { method: 'POST', url: resource.resourceType },
      });
      chunkBytes += line.length;
      if (chunk.length >= CHUNK || chunkBytes >= CHUNK_BYTES) await flush();
    }
  } catch (err) {
    if (!(err instanceof LineTooLong)) throw err;
    throw new ImportError(
      `${src.file}:${err.line}: a line is longer than ${MAX_LINE_BYTES / 1024 / 1024} MiB, more than one resource may be ` +
        '(or the file has no line ends); a larger resource can come in a Bundle file',
    );
  }
  await flush();
}

/**
 * `carevault import`: Bundles (batch or transaction) and NDJSON into one vault, referenced resource
 * types first. Each Bundle, and each 500 NDJSON lines (fewer when they are large), is one transaction: a
 * failing file leaves the files before it imported and names the file and the reason.
 */
export async function importFiles(ctx: FhirContext, files: string[], progress: ImportProgress): Promise<ImportReport> {
  const started = Date.now();
  const sources = files.map(inspector()).sort((a, b) => a.rank - b.rank || a.file.localeCompare(b.file));
  const report: ImportReport = { partition: ctx.partition, files: sources.length, written: {}, total: 0, seconds: 0 };
  for (const src of sources) {
    try {
      if (src.kind === 'bundle') await importBundle(ctx, src, report, progress);
      else await importNdjson(ctx, src, report, progress);
    } catch (err) {
      if (err instanceof FhirError) throw new ImportError(`${src.file}: ${err.diagnostics}`);
      throw err;
    }
  }
  report.seconds = Math.round((Date.now() - started) / 100) / 10;
  report.written = Object.fromEntries(Object.entries(report.written).sort(([a], [b]) => a.localeCompare(b)));
  return report;
}
