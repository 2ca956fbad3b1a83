import { constants, DeflateRaw, deflateRawSync } from 'node:zlib';

/** What a Node zlib stream keeps of its native handle; not public API, so every use is checked. */
interface ZlibInternals {
  _handle?: {
    reset?: () => void;
    writeSync?: (
      flush: number,
      input: Buffer,
      inOff: number,
      inLen: number,
      out: Buffer,
      outOff: number,
      outLen: number,
    ) => void;
  } | null;
  /** [output space left, input left] after a `writeSync`. */
  _writeState?: unknown;
  destroyed?: boolean;
  on(event: 'error', listener: () => void): unknown;
}

const OUTPUT_BYTES = 64 * 1024;

/**
 * Raw deflate against one fixed dictionary, byte for byte what `deflateRawSync(input, { dictionary })` gives.
 *
 * `deflateRawSync` builds a zlib stream for every call and frees it: ≈ 10 µs of the ≈ 14 µs it takes to pack an
 * audit event, which every read, search and token writes. One stream is kept instead and reset between inputs
 * (a reset keeps zlib's memory and sets the dictionary again), driven through its native handle as Node's own
 * synchronous path does. That handle is not public: whenever it is not what is expected, reports an error, or an
 * input does not fit the output buffer, the input goes through `deflateRawSync`.
 */
export class DictionaryDeflate {
  private stream: ZlibInternals | undefined;
  private readonly out = Buffer.allocUnsafe(OUTPUT_BYTES);

  constructor(private readonly dictionary: Buffer) {
    try {
      const stream = new DeflateRaw({ dictionary }) as unknown as ZlibInternals;
      const handle = stream._handle;
      if (typeof handle?.reset !== 'function' || typeof handle.writeSync !== 'function') return;
      if (!(stream._writeState instanceof Uint32Array) || stream._writeState.length < 2) return;
      // A zlib error destroys the stream and emits 'error' a tick later; without a listener that would end the process.
      stream.on('error', () => {});
      this.stream = stream;
    } catch {
      this.stream = undefined;
    }
  }

  /** Whether inputs go through the kept stream (false: every input through `deflateRawSync`). */
  get kept(): boolean {
    return this.stream !== undefined && !this.stream.destroyed;
  }

  deflate(input: Buffer): Buffer {
    const stream = this.stream;
    const handle = stream?._handle;
    if (stream && handle && !stream.destroyed) {
      try {
        const { out } = this;
        handle.reset?.();
        handle.writeSync?.(constants.Z_FINISH, input, 0, input.length, out, 0, out.length);
        const state = stream._writeState as Uint32Array;
        const outLeft = state[0] as number;
        const inLeft = state[1] as number;
        // All input taken and room left over: the stream finished, so the output is complete.
        if (!stream.destroyed && inLeft === 0 && outLeft > 0) return Buffer.from(out.subarray(0, out.length - outLeft));
      } catch {
        this.stream = undefined;
      }
    }
    return deflateRawSync(input, { dictionary: this.dictionary });
  }
}
