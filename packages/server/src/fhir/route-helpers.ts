import type { FastifyRequest } from 'fastify';
import type { Interaction, Restriction } from '../vault/policy.ts';
import type { FhirContext } from './context.ts';
import { FhirError } from './errors.ts';

export type VaultParams = { partition: string; type?: string; id?: string; vid?: string };

/** What the vault plugin lends the modules that register routes of their own. */
export interface RouteHelpers {
  /** The request's vault context (token, vault, access), set up before the handler runs. */
  context(req: FastifyRequest): Promise<FhirContext>;
  /** The restrictions under which `interaction` on `type` is allowed; 403 when it is not. */
  allow(ctx: FhirContext, type: string, interaction: Interaction): Restriction[] | undefined;
  /** The path's resource type, 404 when it is not an R4 type. */
  typeOf(req: FastifyRequest<{ Params: VaultParams }>): string;
  /** The path's id, 400 when it is not a FHIR id. */
  idOf(req: FastifyRequest<{ Params: VaultParams }>): string;
}

/** `Prefer: handling=strict` (http.html#prefer): an unknown parameter is refused instead of ignored. */
export const strictHandling = (req: FastifyRequest) => /\bhandling=strict\b/.test(String(req.headers.prefer ?? ''));

/** The request's `If-Match` (http.html#concurrency), when it has exactly one. */
export const ifMatchOf = (req: FastifyRequest): string | undefined => {
  const value = req.headers['if-match'];
  return typeof value === 'string' ? value : undefined;
};

/** A search's parameters as the URL gives them, in order and repeated as sent. */
export const queryParams = (req: FastifyRequest): [string, string][] => {
  const q = req.raw.url?.split('?')[1];
  return q ? [...new URLSearchParams(q)] : [];
};

/** A `POST …/_search` form's parameters (the body parser gives them as pairs); another body is 415. */
export const searchForm = (req: FastifyRequest): [string, string][] => {
  if (req.body !== undefined && !Array.isArray(req.body)) {
    throw new FhirError(415, 'not-supported', 'send _search parameters as application/x-www-form-urlencoded');
  }
  return (req.body as [string, string][] | undefined) ?? [];
};
