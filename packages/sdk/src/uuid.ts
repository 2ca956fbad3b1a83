/** RFC 9562 name-based UUID (version 5, SHA-1): the same namespace and name always give the same id. */
export async function uuidV5(namespace: string, name: string): Promise<string> {
  const ns = hexBytes(namespace.replace(/-/g, ''));
  const data = new Uint8Array([...ns, ...new TextEncoder().encode(name)]);
  const hash = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-1', data)).slice(0, 16);
  hash[6] = ((hash[6] as number) & 0x0f) | 0x50;
  hash[8] = ((hash[8] as number) & 0x3f) | 0x80;
  const hex = [...hash].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function hexBytes(hex: string): number[] {
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new TypeError('namespace must be a UUID');
  return Array.from({ length: 16 }, (_, i) => Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16));
}
