import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CurrentVersion } from '../store/types.ts';
import { FhirError } from './errors.ts';

const FHIR_TYPES = new Set(['application/fhir+json', 'application/json', 'application/json+fhir', 'json', 'text/json']);

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
  const [major] = contentType.split('/');
  const ok = ranges(req.headers.accept ?? '').some((r) => r === contentType || r === `${major}/*`);
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
