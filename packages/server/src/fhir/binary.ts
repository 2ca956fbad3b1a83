import type { IncomingMessage } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CurrentVersion } from '../store/types.ts';
import { FhirError } from './errors.ts';
import { ID_RE } from './resource-types.ts';

// FHIR R4 Binary in its own format (binary.html#rest): read as the bytes it holds, written from the bytes sent.

const FHIR_TYPES = new Set([
  'application/fhir+json',
  'application/json',
  'application/json+fhir',
  'json',
  'text/json',
  'application/fhir+xml',
  'application/xml+fhir',
]);

function ranges(accept: string): string[] {
  return accept.split(',').map((r) => r.split(';')[0]?.trim().toLowerCase() ?? '');
}

/**
 * FHIR R4 Binary read (binary.html#rest): a request whose Accept names no FHIR format (and no `_format`) wants
 * the content itself — seed 001 fetches a document's PDF this way.
 */
export function wantsNativeBinary(req: FastifyRequest): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  if ((req.params as { type?: string }).type !== 'Binary') return false;
  if (!req.routeOptions.url?.endsWith('/:type/:id')) return false;
  if ((req.query as Record<string, unknown>)._format !== undefined) return false;
  const accept = req.headers.accept;
  if (!accept) return false;
  const asked = ranges(accept);
  return !asked.some((r) => FHIR_TYPES.has(r) || r === '*/*' || r === 'application/*' || r === '');
}

export interface NativeBinary {
  contentType: string;
  data: Buffer;
}

/** The Binary's bytes and content type; 406 when the Accept does not cover that type. */
export function nativeBinary(req: FastifyRequest, v: CurrentVersion): NativeBinary {
  const binary = JSON.parse(v.content as string) as { contentType?: string; data?: string };
  const contentType = (binary.contentType ?? 'application/octet-stream').toLowerCase();
  const media = contentType.split(';')[0]?.trim() ?? '';
  const [major] = media.split('/');
  const ok = ranges(req.headers.accept ?? '').some((r) => r === media || r === `${major}/*`);
  if (!ok) {
    throw new FhirError(406, 'not-supported', `Binary/${v.id} holds ${contentType}, not ${req.headers.accept}`);
  }
  return { contentType, data: Buffer.from(binary.data ?? '', 'base64') };
}

export function sendNativeBinary(reply: FastifyReply, v: CurrentVersion, { contentType, data }: NativeBinary) {
  // Stored content is served from the platform's origin: it must never run there as a page.
  return reply
    .code(200)
    .header('content-type', contentType)
    .header('etag', `W/"${v.version}"`)
    .header('last-modified', new Date(v.lastUpdated).toUTCString())
    .header('x-content-type-options', 'nosniff')
    .header('content-security-policy', "sandbox; default-src 'none'")
    .send(data);
}

/**
 * Bytes sent to create or update a Binary: at most what a Binary of FHIR JSON may hold (the 16 MiB body limit,
 * less base64's third), so that either form of upload stores the same largest resource.
 */
export const RAW_BINARY_LIMIT = 12 * 1024 * 1024;

/** A Binary's body as sent, in a media type other than FHIR's; the create or update makes it a Binary. */
export class RawBinary {
  constructor(
    readonly contentType: string,
    readonly data: Buffer,
  ) {}
}

/** A media type with its parameters (RFC 9110 §8.3.1), nothing else: it is answered back as a header on read. */
const MEDIA_TYPE =
  /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+(?:[ \t]*;[ \t]*[a-z0-9!#$&^_.+-]+=(?:[a-z0-9!#$&^_.+-]+|"[^"\\\r\n]*"))*$/i;

/** Whether a request writes a Binary from a body of another media type: create, update, conditional update. */
export function isRawBinaryWrite(req: FastifyRequest): boolean {
  if (req.method !== 'POST' && req.method !== 'PUT') return false;
  if ((req.params as { type?: string }).type !== 'Binary') return false;
  const url = req.routeOptions.url ?? '';
  return url.endsWith('/:type') || url.endsWith('/:type/:id');
}

/** Reads a raw Binary body up to RAW_BINARY_LIMIT (413 past it, before reading on when its length is declared). */
export async function readRawBinary(req: FastifyRequest, payload: IncomingMessage): Promise<RawBinary> {
  const contentType = (req.headers['content-type'] ?? '').trim();
  if (contentType.length > 256 || !MEDIA_TYPE.test(contentType)) {
    throw new FhirError(415, 'not-supported', 'a Binary is sent with a valid Content-Type (type/subtype)');
  }
  const tooLarge = () =>
    new FhirError(413, 'too-costly', `a Binary is sent as at most ${RAW_BINARY_LIMIT / 1024 / 1024} MiB`);
  if (Number(req.headers['content-length']) > RAW_BINARY_LIMIT) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of payload) {
    size += (chunk as Buffer).length;
    if (size > RAW_BINARY_LIMIT) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  // Binary.contentType is a code: single spaces only.
  return new RawBinary(contentType.replace(/[ \t]*;[ \t]*/g, '; '), Buffer.concat(chunks));
}

/**
 * The Binary resource a raw body stands for: its bytes as `data`, its Content-Type as `contentType`, and the
 * `X-Security-Context` header (a relative reference) as `securityContext`, which decides the Binary's patient
 * compartments (vault/compartment.ts).
 */
export function binaryResource(req: FastifyRequest, raw: RawBinary, id?: string): Record<string, unknown> {
  const header = req.headers['x-security-context'];
  let securityContext: { reference: string } | undefined;
  if (header !== undefined) {
    const m = typeof header === 'string' ? /^([A-Z][A-Za-z]+)\/([^/]+)$/.exec(header.trim()) : null;
    if (!m || !ID_RE.test(m[2] as string)) {
      throw new FhirError(400, 'invalid', 'X-Security-Context is a relative reference, Type/id');
    }
    securityContext = { reference: `${m[1]}/${m[2]}` };
  }
  return {
    resourceType: 'Binary',
    ...(id !== undefined ? { id } : {}),
    contentType: raw.contentType,
    ...(securityContext ? { securityContext } : {}),
    ...(raw.data.length ? { data: raw.data.toString('base64') } : {}),
  };
}
