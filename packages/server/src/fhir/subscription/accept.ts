import type { SearchQuery } from '../../store/types.ts';
import { decide, type Restriction, type VaultAccess } from '../../vault/policy.ts';
import { insufficientScope } from '../bearer.ts';
import { FhirError } from '../errors.ts';
import { RESOURCE_TYPES } from '../resource-types.ts';
import { parseSearch } from '../search/parse.ts';
import { chainsInScope } from '../search/restrictions.ts';

/** The parts of a Subscription (R4 subscription.html) this server acts on. */
export interface SubscriptionParts {
  status: string;
  end: string | undefined;
  type: string;
  params: [string, string][];
  endpoint: string;
  /** The MIME type of a full-resource notification; undefined: an empty POST. */
  payload: string | undefined;
  headers: [string, string][];
}

const STATUSES = new Set(['requested', 'active', 'error', 'off']);
/** A criteria shapes which resources match, never the shape of an answer. */
const NOT_IN_CRITERIA =
  /^_(count|offset|cursor|sort|total|summary|elements|include|revinclude|contained|format|pretty)$/;
const PAYLOADS = /^application\/(fhir\+)?json(\s*;\s*[a-z-]+=[A-Za-z0-9.+-]+)*$/;
const HEADER = /^([!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}):[ \t]*([^\r\n\0]{0,4000})$/;
/** Headers the server sets itself: a Subscription must not change how the request is framed or where it goes. */
const OWN_HEADERS = new Set([
  'host',
  'content-length',
  'content-type',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'expect',
  'proxy-authorization',
]);

const invalid = (diagnostics: string, element: string) =>
  new FhirError(422, 'invalid', diagnostics, {}, [`Subscription.${element}`]);

/** Whether `endpoint` is under one of the configured prefixes (a whole path segment, not a name's start). */
export function endpointAllowed(endpoint: string, prefixes: string[]): boolean {
  return prefixes.some((p) => endpoint === p || endpoint.startsWith(p.endsWith('/') ? p : `${p}/`));
}

/**
 * What a Subscription asks for, checked as a write is (422 for what the server cannot do, 403 for criteria the
 * writer may not search). Only rest-hook channels to the configured endpoints are delivered: a vault's client
 * must not make the server call anywhere it likes. The criteria is parsed like a conditional's: the vault's own
 * terminology and lists (`:in`, `:below`, `_list`) are left out.
 */
export function subscriptionParts(resource: Record<string, unknown>, endpoints: string[]): SubscriptionParts {
  const status = resource.status;
  if (typeof status !== 'string' || !STATUSES.has(status))
    throw invalid('status must be requested, active, error or off', 'status');
  const channel = (resource.channel ?? {}) as Record<string, unknown>;
  if (channel.type !== 'rest-hook')
    throw new FhirError(
      422,
      'not-supported',
      `channel.type ${String(channel.type)}: this server delivers rest-hook only`,
      {},
      ['Subscription.channel.type'],
    );
  const rawEndpoint = channel.endpoint;
  if (typeof rawEndpoint !== 'string') throw invalid('a rest-hook needs channel.endpoint', 'channel.endpoint');
  let url: URL;
  try {
    url = new URL(rawEndpoint);
  } catch {
    throw invalid('channel.endpoint is not an absolute URL', 'channel.endpoint');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw invalid('channel.endpoint must be an http(s) URL', 'channel.endpoint');
  if (url.username || url.password || url.hash)
    throw invalid('channel.endpoint must not carry credentials or a fragment', 'channel.endpoint');
  if (!endpointAllowed(url.href, endpoints))
    throw invalid(
      endpoints.length === 0
        ? 'this server notifies no endpoint (its administrator lists them in CAREVAULT_SUBSCRIPTION_ENDPOINTS)'
        : 'channel.endpoint is not under an endpoint this server may notify (CAREVAULT_SUBSCRIPTION_ENDPOINTS)',
      'channel.endpoint',
    );
  const payload = channel.payload;
  if (payload !== undefined && (typeof payload !== 'string' || !PAYLOADS.test(payload)))
    throw new FhirError(
      422,
      'not-supported',
      'channel.payload: this server sends application/fhir+json (or application/json), or no payload',
      {},
      ['Subscription.channel.payload'],
    );
  const headers = headersOf(channel.header);
  const { type, params } = criteriaOf(resource.criteria);
  const end = typeof resource.end === 'string' ? resource.end : undefined;
  return { status, end, type, params, endpoint: url.href, payload, headers };
}

function headersOf(value: unknown): [string, string][] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > 20)
    throw invalid('channel.header is a list of at most 20 "Name: value" strings', 'channel.header');
  return value.map((h, i) => {
    const m = typeof h === 'string' ? HEADER.exec(h) : null;
    if (!m) throw invalid(`channel.header[${i}] is not a "Name: value" header`, `channel.header[${i}]`);
    const name = (m[1] as string).toLowerCase();
    if (OWN_HEADERS.has(name))
      throw invalid(`channel.header[${i}]: ${name} is set by the server`, `channel.header[${i}]`);
    return [name, m[2] as string];
  });
}

function criteriaOf(value: unknown): { type: string; params: [string, string][] } {
  if (typeof value !== 'string' || value.length > 4000)
    throw invalid('criteria must be a search such as Observation?code=http://loinc.org|1234-5', 'criteria');
  const q = value.indexOf('?');
  const type = q < 0 ? value : value.slice(0, q);
  if (!RESOURCE_TYPES.has(type)) throw invalid(`criteria: ${type} is not a resource type`, 'criteria');
  const params = [...new URLSearchParams(q < 0 ? '' : value.slice(q + 1))];
  const control = params.find(([n]) => NOT_IN_CRITERIA.test(n.split(':')[0] as string));
  if (control) throw invalid(`criteria: ${control[0]} has no place in a Subscription's criteria`, 'criteria');
  return { type, params };
}

/**
 * The criteria as a query of the store, and the restrictions of `access` on its type (granular scopes, applied
 * as filters): a criteria the caller may not search is 403, one this server cannot answer is 422.
 */
export function criteriaQuery(
  parts: Pick<SubscriptionParts, 'type' | 'params'>,
  access: VaultAccess,
  base: string,
): { query: SearchQuery; restrictions: Restriction[] | undefined } {
  const d = decide(access, parts.type, 'search-type');
  if (!d.allowed) throw insufficientScope(`criteria: ${d.reason}`);
  try {
    const { query } = parseSearch(parts.type, parts.params, { base, strict: true });
    return { query: { ...query, filters: chainsInScope(access, base, query.filters) }, restrictions: d.restrictions };
  } catch (err) {
    if (err instanceof FhirError && err.status === 403) throw err;
    if (err instanceof FhirError)
      throw new FhirError(422, err.code, `criteria: ${err.diagnostics}`, {}, ['Subscription.criteria']);
    throw err;
  }
}
