import type { FoundResource } from '../../store/types.ts';
import type { SubscriptionParts } from './accept.ts';

const TIMEOUT_MS = 10_000;

/**
 * Sends one notification of a rest-hook (R4 subscription.html#2.46.7.1): without a payload an empty POST to the
 * endpoint; with one, the resource as an update (PUT) to `[endpoint]/[type]/[id]`, the endpoint taken as a FHIR
 * base. Redirects are not followed (the endpoint was checked, where it redirects to was not). Returns undefined
 * when the endpoint took it (2xx), else why not — never the headers, which may carry the endpoint's secret.
 */
export async function notify(
  fetchImpl: typeof fetch,
  sub: SubscriptionParts,
  resource: FoundResource,
): Promise<string | undefined> {
  const headers: Record<string, string> = {};
  for (const [name, value] of sub.headers) headers[name] = headers[name] ? `${headers[name]}, ${value}` : value;
  const request: [string, RequestInit] = sub.payload
    ? [
        `${sub.endpoint.replace(/\/$/, '')}/${resource.type}/${resource.id}`,
        { method: 'PUT', body: resource.content, headers: { ...headers, 'content-type': sub.payload } },
      ]
    : [sub.endpoint, { method: 'POST', headers }];
  try {
    const res = await fetchImpl(request[0], {
      ...request[1],
      redirect: 'manual',
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    await res.body?.cancel().catch(() => {});
    return res.status >= 200 && res.status < 300 ? undefined : `the endpoint answered ${res.status}`;
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code;
    return `the endpoint could not be reached (${cause ?? (err as Error).name})`;
  }
}
