import type { FastifyRequest } from 'fastify';
import { decide, type VaultAccess } from '../vault/policy.ts';
import { insufficientScope } from './bearer.ts';
import { FhirError } from './errors.ts';

/**
 * X-Provenance (FHIR R4 provenance.html#header, DEQM, seed 002): a Provenance without `target` and with at
 * least one agent. The server stores it in the same transaction as the writes, targeting every written
 * version, and echoes it. Anything else is refused before a single write (M06).
 */
export function parseProvenanceHeader(header: string | string[] | undefined): Record<string, unknown> | undefined {
  if (header === undefined) return undefined;
  if (Array.isArray(header)) throw new FhirError(400, 'invalid', 'send X-Provenance once');
  let value: unknown;
  try {
    value = JSON.parse(header);
  } catch {
    throw new FhirError(400, 'invalid', 'X-Provenance is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FhirError(400, 'invalid', 'X-Provenance must be a Provenance resource');
  }
  const p = value as Record<string, unknown>;
  if (p.resourceType !== 'Provenance')
    throw new FhirError(400, 'invalid', 'X-Provenance must be a Provenance resource');
  if (p.target !== undefined)
    throw new FhirError(400, 'invalid', 'X-Provenance must not have a target: the server sets it');
  if (!Array.isArray(p.agent) || p.agent.length === 0) {
    throw new FhirError(400, 'invalid', 'X-Provenance needs at least one agent');
  }
  const { id: _id, meta: _meta, ...rest } = p;
  return rest;
}

/** Header values are Latin-1 on the wire: keep the JSON valid and ASCII. */
export function provenanceHeaderValue(content: string): string {
  return content.replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** The request's X-Provenance, if any; the server writes it for the caller, so the caller must be allowed to. */
export function provenanceFor(req: FastifyRequest, access: VaultAccess): Record<string, unknown> | undefined {
  const provenance = parseProvenanceHeader(req.headers['x-provenance']);
  if (provenance) {
    const d = decide(access, 'Provenance', 'create');
    if (!d.allowed) throw insufficientScope(`X-Provenance: ${d.reason}`);
  }
  return provenance;
}
