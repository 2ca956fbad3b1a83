import type { Resource } from '../../fhir-types.js';
import { ScpSyncError } from './context.js';

/**
 * Candidate observations as an EHR or Synthea hands them over: a Bundle (its entries' resources), a single
 * resource, a JSON array, or NDJSON (one resource per line). Errors name the line.
 */
export function parseCandidates(text: string, name = 'observations'): Resource[] {
  const trimmed = text.trim();
  if (trimmed === '') throw new ScpSyncError('bad-observations', `${name} is empty`);
  if (trimmed.startsWith('[') || (trimmed.startsWith('{') && !isNdjson(trimmed))) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch (err) {
      throw new ScpSyncError('bad-observations', `${name} is not valid JSON: ${(err as Error).message}`);
    }
    const list = Array.isArray(parsed)
      ? parsed
      : (parsed as Resource).resourceType === 'Bundle'
        ? (((parsed as Resource).entry as { resource?: unknown }[] | undefined) ?? []).map((e) => e.resource)
        : [parsed];
    return list.map((r, i) => asResource(r, `${name}: entry ${i}`));
  }
  return text.split('\n').flatMap((line, i) => {
    if (line.trim() === '') return [];
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (err) {
      throw new ScpSyncError('bad-observations', `${name} line ${i + 1} is not valid JSON: ${(err as Error).message}`);
    }
    return [asResource(parsed, `${name} line ${i + 1}`)];
  });
}

/** A JSON document spans lines freely; NDJSON has one complete object per line. */
function isNdjson(text: string): boolean {
  const lines = text.split('\n').filter((l) => l.trim());
  if (lines.length < 2) return false;
  try {
    JSON.parse(lines[0] as string);
    return true;
  } catch {
    return false;
  }
}

function asResource(value: unknown, where: string): Resource {
  if (typeof value !== 'object' || value === null || typeof (value as Resource).resourceType !== 'string') {
    throw new ScpSyncError('bad-observations', `${where} is not a FHIR resource`);
  }
  return value as Resource;
}
