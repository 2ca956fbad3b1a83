import { FhirError } from '../errors.ts';
import type { PatchDocument } from '../interactions/patch.ts';
import { ID_RE, RESOURCE_TYPES } from '../resource-types.ts';

export type EntryMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** One Bundle.entry of a batch or transaction, its request URL taken apart. */
export interface EntryRequest {
  index: number;
  method: EntryMethod;
  type: string;
  id?: string | undefined;
  versionId?: string | undefined;
  /** The query of a search or conditional URL. */
  query?: string | undefined;
  fullUrl?: string | undefined;
  resource?: Record<string, unknown> | undefined;
  /** The patch of a PATCH entry: a JSON Patch taken out of its Binary, or a FHIRPath Patch Parameters. */
  patch?: PatchDocument | undefined;
  ifMatch?: string | undefined;
  ifNoneExist?: string | undefined;
}

/** A batch entry that could not be parsed: answered on its own, the other entries still run. */
export interface InvalidEntry {
  index: number;
  invalid: FhirError;
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);
export const MAX_ENTRIES = 10_000;

const fail = (index: number, message: string) => new FhirError(400, 'invalid', `entry[${index}]: ${message}`);

export type ParsedBundle =
  | { type: 'transaction'; entries: EntryRequest[] }
  | { type: 'batch'; entries: (EntryRequest | InvalidEntry)[] };

/**
 * Validates the Bundle shape and parses every entry's request (http.html#transaction). A bad entry fails a
 * transaction whole; in a batch it gets its own error and the others proceed (http.html#brules).
 */
export function parseEntries(body: unknown, base: string): ParsedBundle {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new FhirError(400, 'structure', 'the body must be a Bundle');
  const bundle = body as Record<string, unknown>;
  if (bundle.resourceType !== 'Bundle')
    throw new FhirError(400, 'invalid', 'POST to the base takes a Bundle of type batch or transaction');
  if (bundle.type !== 'batch' && bundle.type !== 'transaction')
    throw new FhirError(400, 'invalid', `Bundle.type must be batch or transaction, not ${String(bundle.type)}`);
  const raw = bundle.entry ?? [];
  if (!Array.isArray(raw)) throw new FhirError(400, 'structure', 'Bundle.entry must be an array');
  if (raw.length > MAX_ENTRIES) throw new FhirError(400, 'too-costly', `at most ${MAX_ENTRIES} entries per Bundle`);
  if (bundle.type === 'transaction') return { type: 'transaction', entries: raw.map((e, i) => parseEntry(e, i, base)) };
  return {
    type: 'batch',
    entries: raw.map((e, index) => {
      try {
        return parseEntry(e, index, base);
      } catch (err) {
        if (!(err instanceof FhirError)) throw err;
        return { index, invalid: err };
      }
    }),
  };
}

/** The entries of a Bundle that must be a transaction (import turns batches into transactions first). */
export function transactionEntries(body: unknown, base: string): EntryRequest[] {
  const parsed = parseEntries(body, base);
  if (parsed.type !== 'transaction') throw new FhirError(400, 'invalid', 'expected a transaction Bundle');
  return parsed.entries;
}

function parseEntry(e: unknown, index: number, base: string): EntryRequest {
  if (typeof e !== 'object' || e === null) throw fail(index, 'not an object');
  const entry = e as Record<string, unknown>;
  const request = entry.request as Record<string, unknown> | undefined;
  if (typeof request !== 'object' || request === null) throw fail(index, 'request is required');
  const method = request.method;
  if (typeof method !== 'string' || !METHODS.has(method))
    throw fail(index, `request.method ${String(method)} is not supported (GET, HEAD, POST, PUT, PATCH, DELETE)`);
  if (typeof request.url !== 'string' || request.url.length === 0) throw fail(index, 'request.url is required');
  let url = request.url;
  if (url.startsWith(`${base}/`)) url = url.slice(base.length + 1);
  if (/^[a-z]+:/i.test(url) || url.startsWith('/')) throw fail(index, 'request.url must be relative to this vault');
  const [path, query] = [url.split('?')[0] as string, url.includes('?') ? url.slice(url.indexOf('?') + 1) : undefined];
  const parts = path.split('/');
  const type = parts[0] as string;
  if (!RESOURCE_TYPES.has(type)) throw fail(index, `${type} is not an R4 resource type`);
  const id = parts[1];
  if (id !== undefined && !ID_RE.test(id)) throw fail(index, `"${id}" is not a valid id`);
  let versionId: string | undefined;
  if (parts.length === 4 && parts[2] === '_history') versionId = parts[3];
  else if (parts.length > 2) throw fail(index, `unsupported request.url ${url}`);
  const resource = entry.resource as Record<string, unknown> | undefined;
  if ((method === 'POST' || method === 'PUT') && (typeof resource !== 'object' || resource === null))
    throw fail(index, `${method} needs a resource`);
  if (method === 'POST' && id !== undefined) throw fail(index, 'POST goes to the type, not to an id');
  if ((method === 'PUT' || method === 'PATCH' || method === 'DELETE') && id === undefined && query === undefined)
    throw fail(index, `${method} needs Type/id or a condition`);
  if (method === 'PATCH' && versionId !== undefined) throw fail(index, 'PATCH goes to Type/id, not to a version');
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  return {
    index,
    method: method as EntryMethod,
    type,
    id,
    versionId,
    query,
    fullUrl: str(entry.fullUrl),
    resource: method === 'PATCH' ? undefined : resource,
    patch: method === 'PATCH' ? patchOf(resource, index) : undefined,
    ifMatch: str(request.ifMatch),
    ifNoneExist: str(request.ifNoneExist),
  };
}

/**
 * A PATCH entry's resource (http.html#patch, "in a transaction"): a Binary holding a JSON Patch, or the
 * Parameters of a FHIRPath Patch.
 */
function patchOf(resource: unknown, index: number): PatchDocument {
  const binary = resource as Record<string, unknown> | undefined;
  if (binary?.resourceType === 'Parameters') return { kind: 'fhirpath', parameters: binary };
  if (typeof binary !== 'object' || binary === null || binary.resourceType !== 'Binary')
    throw fail(index, 'PATCH needs a Binary holding a JSON Patch, or a FHIRPath Patch Parameters');
  if (
    typeof binary.contentType !== 'string' ||
    binary.contentType.split(';')[0]?.trim() !== 'application/json-patch+json'
  )
    throw fail(index, 'the Binary of a PATCH must have contentType application/json-patch+json');
  const data = typeof binary.data === 'string' ? binary.data.replace(/\s+/g, '') : '';
  if (!data || !BASE64_RE.test(data)) throw fail(index, 'the Binary of a PATCH needs its patch as base64 in data');
  let operations: unknown;
  try {
    operations = JSON.parse(Buffer.from(data, 'base64').toString('utf8'));
  } catch {
    throw fail(index, 'the Binary of a PATCH does not hold JSON');
  }
  if (!Array.isArray(operations)) throw fail(index, 'a JSON Patch document is an array of operations');
  return { kind: 'json', operations };
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Applies `rewrite` to every Reference.reference (and nothing else) in a resource, contained ones included. */
export function rewriteReferences(value: unknown, rewrite: (ref: string) => string): void {
  if (Array.isArray(value)) {
    for (const v of value) rewriteReferences(v, rewrite);
    return;
  }
  if (typeof value !== 'object' || value === null) return;
  const o = value as Record<string, unknown>;
  for (const [k, v] of Object.entries(o)) {
    if (k === 'reference' && typeof v === 'string') o[k] = rewrite(v);
    else if (typeof v === 'object' && v !== null) rewriteReferences(v, rewrite);
  }
}

export const STATUS_TEXT: Record<number, string> = {
  200: '200 OK',
  201: '201 Created',
  204: '204 No Content',
  400: '400 Bad Request',
  403: '403 Forbidden',
  404: '404 Not Found',
  409: '409 Conflict',
  410: '410 Gone',
  412: '412 Precondition Failed',
  422: '422 Unprocessable Entity',
};
