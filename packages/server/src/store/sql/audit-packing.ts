import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { AUDIT_DICTIONARY_V1 } from './audit-dictionary.ts';

/**
 * Audit events on disk: the BALP JSON deflated against a dictionary of typical events (about 2.2 KB → 120-140
 * bytes), behind a one-byte format version. The hash chain covers the JSON itself, not these bytes, so the
 * packing can change (a new version) without touching the chain.
 */
const V1 = 1;
const dictionaries: Record<number, Buffer> = { [V1]: Buffer.from(AUDIT_DICTIONARY_V1, 'utf8') };

export function packEvent(json: string): Buffer {
  const body = deflateRawSync(Buffer.from(json, 'utf8'), { level: 6, dictionary: dictionaries[V1] });
  return Buffer.concat([Buffer.from([V1]), body]);
}

export function unpackEvent(packed: Uint8Array): string {
  const dictionary = dictionaries[packed[0] as number];
  if (!dictionary) throw new Error(`audit event packed with unknown format ${packed[0]}`);
  return inflateRawSync(packed.subarray(1), { dictionary }).toString('utf8');
}

/** The JSON of a stored event: packed (current rows) or plain text (rows written before packing). */
export function eventJson(row: { content: string; packed?: Uint8Array | null }): string {
  return row.packed ? unpackEvent(row.packed) : row.content;
}
