import type { PatchDocument } from '../interactions/patch.ts';
import { rewriteReferences } from './entries.ts';

/**
 * Applies `rewrite` to the references a Bundle's PATCH entry sets (urn:uuid of other entries, conditional
 * references): Reference values, and a reference's text set by its path (`/subject/reference`,
 * `Observation.subject.reference`).
 */
export function rewritePatchReferences(doc: PatchDocument, rewrite: (ref: string) => string): void {
  if (doc.kind === 'fhirpath') {
    // valueReference parts; and a reference's text set by its path (`Observation.subject.reference`).
    rewriteReferences(doc.parameters, rewrite);
    const operations = (doc.parameters as { parameter?: { part?: Record<string, unknown>[] }[] }).parameter ?? [];
    for (const op of Array.isArray(operations) ? operations : []) {
      const parts = Array.isArray(op?.part) ? op.part : [];
      const path = parts.find((x) => x?.name === 'path')?.valueString;
      const value = parts.find((x) => x?.name === 'value');
      if (typeof path === 'string' && path.endsWith('.reference') && typeof value?.valueString === 'string')
        value.valueString = rewrite(value.valueString);
    }
    return;
  }
  rewriteReferences(doc.operations, rewrite);
  // An operation may set a reference's text itself: {"op":"replace","path":"/subject/reference","value":"urn:uuid:…"}.
  for (const op of doc.operations) {
    const o = op as Record<string, unknown> | null;
    if (typeof o?.path === 'string' && o.path.endsWith('/reference') && typeof o.value === 'string')
      o.value = rewrite(o.value);
  }
}
