import { createRequire } from 'node:module';
import { bad, MAX_VALUES } from './value-parsers.ts';

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

/** `_elements` (search.html#elements): top-level element names, comma-separated, at most MAX_VALUES. */
export function parseElements(value: string): string[] {
  const elements = value
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean);
  if (elements.length > MAX_VALUES) throw bad(`_elements takes at most ${MAX_VALUES} names`);
  if (elements.some((e) => !/^[a-zA-Z][A-Za-z0-9]*$/.test(e))) throw bad('_elements takes top-level element names');
  return elements;
}

/**
 * `_summary` or `_elements` on a read or vread (search.html#summary applies to them as well): how the served
 * JSON is cut, or undefined for the whole resource. Each may be given once, and not both.
 */
export function readSubset(query: Record<string, unknown>): ((content: string, type: string) => string) | undefined {
  const { _summary: summary, _elements: elements } = query;
  if (Array.isArray(summary) || Array.isArray(elements)) throw bad('_summary and _elements may be given once each');
  if (summary !== undefined && elements !== undefined) throw bad('use _summary or _elements, not both');
  if (typeof elements === 'string') {
    const names = parseElements(elements);
    return (content, type) => elementsOnly(content, type, names);
  }
  if (summary === undefined || summary === 'false') return undefined;
  if (summary !== 'true' && summary !== 'text' && summary !== 'data')
    throw bad('_summary on a read is one of true, text, data, false');
  return (content, type) => summarize(content, type, summary);
}
