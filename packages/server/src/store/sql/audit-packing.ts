import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { renderAuditEvent, type StoredInput } from '../../audit/balp.ts';
import { AUDIT_DICTIONARY_V1, AUDIT_DICTIONARY_V4 } from './audit-dictionary.ts';
import { DictionaryDeflate } from './dictionary-deflate.ts';

/**
 * Audit events on disk: the BALP JSON deflated against a dictionary of typical events, behind a one-byte
 * format version. The hash chain covers the JSON itself, not these bytes, so the packing can change (a new
 * version) without touching the chain; every version stays readable.
 *   1: the JSON deflated (≈ 2.2 KB → 200 bytes).
 *   2: as 1, but the values the row keeps in columns of its own (id, recorded, request and correlation id)
 *      are replaced by one control character each first: JSON.stringify never writes a raw control
 *      character, so putting the column values back gives the exact JSON. After a newline (which
 *      JSON.stringify never writes either) follow the event's search refs, which the hash covers: deflate
 *      finds them in the JSON, so they cost a few bytes here instead of a table of their own. A query
 *      entity's base64 (BALP) is packed as the text it encodes (marked with \u0005), which deflate can
 *      match against the query's description; only when that gives back the exact base64.
 *   3: as 2, deflated against one of the dictionary's four events (the second byte says which; 0: all four).
 *      zlib hashes the whole dictionary before every event: the one event of the same kind is a quarter of
 *      that work (≈ 25 → 18 µs per read event, warm) and packs as small.
 *   4: not the BALP JSON but the event's compact input (audit/balp.ts `StoredInput`, ≈ 500 bytes instead of
 *      ≈ 2.3 KB), which the hash covers instead of the JSON; the JSON is rendered from it when the event is
 *      read. Then a newline and the refs, as in 2; deflated against the typical input of its kind (second
 *      byte: 0 token, 1 write, 2 search, 3 read). Building, hashing and packing the JSON of every event cost
 *      ≈ 140 µs of a read's ≈ 420 (2026-12-03); the compact input, ≈ 20.
 */
const V1 = 1;
const V2 = 2;
const V3 = 3;
const V4 = 4;
const dictionary = Buffer.from(AUDIT_DICTIONARY_V1, 'utf8');

/** Version 3's dictionaries: the whole one, then its events in order (token, write, search, read). */
const DICTIONARIES: Buffer[] = (() => {
  const starts: number[] = [];
  let at = dictionary.indexOf('{"resourceType":"AuditEvent"');
  while (at >= 0) {
    starts.push(at);
    at = dictionary.indexOf('{"resourceType":"AuditEvent"', at + 1);
  }
  if (starts.length !== 4) throw new Error('the audit dictionary does not hold four events');
  return [dictionary, ...starts.map((start, k) => dictionary.subarray(start, starts[k + 1] ?? dictionary.length))];
})();

/** The REST interactions each of the dictionary's events describes best; ITI-71 (tokens) is the first. */
const SUBTYPE = /"subtype":\[\{"system":"[^"]*","code":"([^"]+)"/;
const READS = new Set(['read', 'vread', 'history-instance', 'history-type', 'history-system']);
const SEARCHES = new Set(['search-type', 'search-system', 'search']);
const WRITES = new Set(['create', 'update', 'patch', 'delete', 'transaction', 'batch']);

function dictionaryFor(json: string): number {
  const code = SUBTYPE.exec(json.slice(0, 1024))?.[1];
  if (code === undefined) return 0;
  if (code === 'ITI-71') return 1;
  if (WRITES.has(code)) return 2;
  if (SEARCHES.has(code)) return 3;
  return READS.has(code) ? 4 : 0;
}

/** Version 4's dictionaries, one per kind of event (token, write, search, read). */
const COMPACT_DICTIONARIES = AUDIT_DICTIONARY_V4.map((d) => Buffer.from(d, 'utf8'));
const COMPACT_DEFLATERS = COMPACT_DICTIONARIES.map((d) => new DictionaryDeflate(d));

function compactDictionaryFor(subtype: string | null): number {
  const code = subtype?.slice(subtype.lastIndexOf('|') + 1);
  if (code === undefined || code === 'ITI-71' || code === 'ITI-102') return 0;
  if (WRITES.has(code)) return 1;
  if (SEARCHES.has(code)) return 2;
  return READS.has(code) ? 3 : 0;
}

/** Version 4: an event's compact input and its refs; `subtype` (system|code) picks the dictionary. */
export function packCompact(compact: string, refs: Refs, subtype: string | null): Buffer {
  const d = compactDictionaryFor(subtype);
  const body = (COMPACT_DEFLATERS[d] as DictionaryDeflate).deflate(
    Buffer.from(`${compact}\n${packRefs(refs)}`, 'utf8'),
  );
  return Buffer.concat([Buffer.from([V4, d]), body]);
}

/** The BALP AuditEvent JSON of a version 4 event, from its row's columns and its compact input. */
export function renderCompact(c: PackedColumns, compact: string): string {
  const event = renderAuditEvent(
    {
      id: c.id,
      recorded: new Date(Number(c.recorded)).toISOString(),
      requestId: c.request_id ?? undefined,
      correlationId: c.correlation_id ?? undefined,
    },
    JSON.parse(compact) as StoredInput,
  );
  return JSON.stringify(event);
}

/** The row's own columns that a packed event leaves out of its JSON. */
export interface PackedColumns {
  id: string;
  recorded: number;
  request_id: string | null;
  correlation_id: string | null;
}

/** Marker, value pairs: a value only takes part when it is non-empty and free of control characters itself. */
function substitutions(c: PackedColumns): [string, string][] {
  const values = [c.id, new Date(Number(c.recorded)).toISOString(), c.request_id, c.correlation_id];
  const out: [string, string][] = [];
  values.forEach((v, i) => {
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what is excluded
    if (v && !/[\u0000-\u001f]/.test(v)) out.push([String.fromCharCode(i + 1), v]);
  });
  // Longest first, so a value that is part of another is not cut out of it.
  return out.sort((a, b) => b[1].length - a[1].length);
}

export type Refs = { kind: string; value: string }[];

const QUERY_B64 = /"query":"([A-Za-z0-9+/]+={0,2})"/g;
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0005 is the marker, never written by JSON.stringify
const QUERY_TEXT = /"query":"\u0005((?:[^"\\]|\\.)*)"/g;

function queriesAsText(json: string): string {
  const text = json.replace(QUERY_B64, (whole, b64: string) => {
    const decoded = Buffer.from(b64, 'base64').toString('utf8');
    return Buffer.from(decoded, 'utf8').toString('base64') === b64
      ? `"query":"\u0005${JSON.stringify(decoded).slice(1, -1)}"`
      : whole;
  });
  return queriesAsBase64(text) === json ? text : json;
}

function queriesAsBase64(text: string): string {
  return text.replace(
    QUERY_TEXT,
    (_, escaped: string) => `"query":"${Buffer.from(JSON.parse(`"${escaped}"`) as string, 'utf8').toString('base64')}"`,
  );
}

/**
 * Version 3 (with the row's columns and the refs), or version 1 (the JSON alone) when they are not given.
 * `format` 2 writes the older form, for tests that rows written by earlier releases still read.
 */
export function packEvent(json: string, columns?: PackedColumns, refs?: Refs, format: 2 | 3 = V3): Buffer {
  if (!columns) return Buffer.concat([Buffer.from([V1]), deflateRawSync(Buffer.from(json, 'utf8'), { dictionary })]);
  let text = queriesAsText(json);
  for (const [marker, value] of substitutions(columns)) text = text.replaceAll(value, marker);
  text += `\n${packRefs(refs ?? [])}`;
  const d = format === V3 ? dictionaryFor(json) : 0;
  const body = deflateRawSync(Buffer.from(text, 'utf8'), { dictionary: DICTIONARIES[d] as Buffer });
  return Buffer.concat([Buffer.from(format === V3 ? [V3, d] : [V2]), body]);
}

/** The JSON and, from version 2 on, the refs; from version 4 on, the compact input the JSON is rendered from. */
export function unpackEvent(
  packed: Uint8Array,
  columns?: PackedColumns,
): { json: string; refs?: Refs; compact?: string } {
  const version = packed[0];
  if (version === V4) {
    if (!columns) throw new Error('a version 4 audit event needs its row to be unpacked');
    const own = COMPACT_DICTIONARIES[packed[1] as number];
    if (!own) throw new Error(`audit event packed against an unknown dictionary ${packed[1]}`);
    const text = inflateRawSync(packed.subarray(2), { dictionary: own }).toString('utf8');
    const newline = text.indexOf('\n');
    if (newline < 0) throw new Error('a version 4 audit event without its refs');
    const compact = text.slice(0, newline);
    return { json: renderCompact(columns, compact), refs: unpackRefs(text.slice(newline + 1)), compact };
  }
  if (version !== V1 && version !== V2 && version !== V3) {
    throw new Error(`audit event packed with unknown format ${version}`);
  }
  const own = version === V3 ? DICTIONARIES[packed[1] as number] : dictionary;
  if (!own) throw new Error(`audit event packed against an unknown dictionary ${packed[1]}`);
  const text = inflateRawSync(packed.subarray(version === V3 ? 2 : 1), { dictionary: own }).toString('utf8');
  if (version === V1) return { json: text };
  if (!columns) throw new Error(`a version ${version} audit event needs its row to be unpacked`);
  const newline = text.indexOf('\n');
  if (newline < 0) throw new Error(`a version ${version} audit event without its refs`);
  let json = text.slice(0, newline);
  for (const [marker, value] of substitutions(columns)) json = json.replaceAll(marker, value);
  json = queriesAsBase64(json);
  return { json, refs: unpackRefs(text.slice(newline + 1)) };
}

/** Refs as lines of a kind letter and the JSON string of the value (JSON.stringify never writes a newline). */
const KIND_LETTER: Record<string, string> = { patient: 'p', entity: 'e', agent: 'a' };
const LETTER_KIND: Record<string, string> = { p: 'patient', e: 'entity', a: 'agent' };

function packRefs(refs: Refs): string {
  return refs
    .map((r) => {
      const letter = KIND_LETTER[r.kind];
      if (!letter) throw new Error(`an audit ref of unknown kind ${r.kind}`);
      return `${letter}${JSON.stringify(r.value)}`;
    })
    .join('\n');
}

function unpackRefs(text: string): Refs {
  if (text === '') return [];
  return text.split('\n').map((line) => {
    const kind = LETTER_KIND[line[0] as string];
    if (!kind) throw new Error('an audit ref of unknown kind');
    return { kind, value: JSON.parse(line.slice(1)) as string };
  });
}

export type StoredEvent = PackedColumns & { content: string; packed?: Uint8Array | null };

/** The JSON of a stored event, its refs when the row holds them (version 2 on), its compact input (version 4). */
export function storedEvent(row: StoredEvent): { json: string; refs?: Refs; compact?: string } {
  return row.packed ? unpackEvent(row.packed, row) : { json: row.content };
}

/** The JSON of a stored event: packed (current rows) or plain text (rows written before packing). */
export function eventJson(row: StoredEvent): string {
  return storedEvent(row).json;
}

/** What a stored event is read back from: the columns eventJson needs. */
export const EVENT_READ_COLUMNS = 'content, packed, id, recorded, request_id, correlation_id';
