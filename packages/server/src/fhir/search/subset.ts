import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
/** Per resource type: top-level `isSummary` and mandatory elements (scripts/generate-summary-elements.ts). */
const ELEMENTS = require('./summary-elements.json') as Record<string, { summary: string[]; mandatory: string[] }>;

export type SummaryMode = 'true' | 'text' | 'data';

const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' };

/** Whether a JSON key is the element `name` (`value[x]` matches valueQuantity…; `_birthDate` its primitive extension). */
function matches(key: string, names: string[]): boolean {
  const k = key.startsWith('_') ? key.slice(1) : key;
  return names.some((n) =>
    n.endsWith('[x]') ? k.startsWith(n.slice(0, -3)) && /^[A-Z]/.test(k.slice(n.length - 3)) : k === n,
  );
}

/** A resource reduced to some of its elements, tagged SUBSETTED (search.html#summary, #elements). */
function subset(content: string, keep: (key: string) => boolean): string {
  const r = JSON.parse(content) as Record<string, unknown>;
  const out: Record<string, unknown> = { resourceType: r.resourceType };
  for (const [k, v] of Object.entries(r)) if (k !== 'resourceType' && (k === 'id' || keep(k))) out[k] = v;
  const meta = { ...(r.meta as Record<string, unknown> | undefined) };
  meta.tag = [...((meta.tag as unknown[]) ?? []), SUBSETTED];
  out.meta = meta;
  return JSON.stringify(out);
}

/**
 * `_summary` (R4 search.html#summary): `true` keeps the elements the base definition marks as summary, `text`
 * keeps text, id, meta and the mandatory top-level elements, `data` drops the narrative.
 */
export function summarize(content: string, type: string, mode: SummaryMode): string {
  const defs = ELEMENTS[type] ?? { summary: [], mandatory: [] };
  if (mode === 'data') return subset(content, (k) => k !== 'text');
  if (mode === 'text') return subset(content, (k) => k === 'text' || k === 'meta' || matches(k, defs.mandatory));
  return subset(content, (k) => matches(k, defs.summary));
}

/**
 * `_elements`: the named top-level elements, plus what every resource keeps (id, meta) and its mandatory
 * elements, which servers SHOULD return whether asked for or not (search.html#elements).
 */
export function elementsOnly(content: string, type: string, elements: string[]): string {
  const mandatory = ELEMENTS[type]?.mandatory ?? [];
  return subset(content, (k) => elements.includes(k) || matches(k, mandatory));
}
