import type { Bundle } from './fhir-types.js';

/**
 * Repeating is safe when doing it twice leaves what doing it once does: reads, PUT/DELETE by id or condition,
 * conditional creates, and batch/transaction Bundles whose every entry is such a request.
 */
export function isSafeToRepeat(method: string, body: unknown, headers?: Record<string, string>): boolean {
  const m = method.toUpperCase();
  if (m === 'GET' || m === 'HEAD' || m === 'PUT' || m === 'DELETE') return true;
  if (m !== 'POST') return false;
  if (headers && Object.keys(headers).some((h) => h.toLowerCase() === 'if-none-exist')) return true;
  const b = body as Bundle | undefined;
  if (b?.resourceType === 'Bundle' && (b.type === 'batch' || b.type === 'transaction')) {
    return (b.entry ?? []).every((e) => {
      const em = e.request?.method?.toUpperCase();
      return (
        em === 'GET' || em === 'HEAD' || em === 'PUT' || em === 'DELETE' || (em === 'POST' && !!e.request?.ifNoneExist)
      );
    });
  }
  return false;
}
