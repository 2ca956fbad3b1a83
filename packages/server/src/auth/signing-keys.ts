import { createPrivateKey, createPublicKey, type JsonWebKey, type KeyObject, sign } from 'node:crypto';
import type { JWK } from 'jose';
import { ExternalSigningKey } from 'oidc-provider';

/** How node:crypto makes each JWS algorithm's signature (RFC 7518 §3.3, §3.4): ECDSA as r ‖ s, not DER. */
const SIGNATURE: Record<string, { hash: string; dsaEncoding?: 'ieee-p1363' }> = {
  ES256: { hash: 'sha256', dsaEncoding: 'ieee-p1363' },
  RS256: { hash: 'sha256' },
};

/**
 * A platform key that signs tokens in the calling thread. The engine signs through WebCrypto otherwise, whose
 * jobs go to libuv's thread pool and back: ≈ 45 µs of CPU per ES256 signature against ≈ 28 µs for the same
 * signature made here (docs/performance.md). The engine's `ExternalSigningKey` (its externalSigningSupport
 * feature) is the hook it offers for keys held elsewhere; the key material stays in this process either way.
 */
class InProcessSigningKey extends ExternalSigningKey {
  readonly #private: KeyObject;
  readonly #public: KeyObject;
  readonly #signature: { hash: string; dsaEncoding?: 'ieee-p1363' };
  #kid: string;
  #alg: string;

  constructor(jwk: JWK & { kid: string; alg: string }, signature: { hash: string; dsaEncoding?: 'ieee-p1363' }) {
    super();
    this.#kid = jwk.kid;
    this.#alg = jwk.alg;
    this.#private = createPrivateKey({ key: jwk as JsonWebKey, format: 'jwk' });
    this.#public = createPublicKey(this.#private);
    this.#signature = signature;
  }

  override get kid(): string {
    return this.#kid;
  }

  override set kid(value: string) {
    this.#kid = value;
  }

  override get alg(): string {
    return this.#alg;
  }

  override set alg(value: string) {
    this.#alg = value;
  }

  override keyObject(): KeyObject {
    return this.#public;
  }

  override sign(data: Uint8Array): Uint8Array {
    const { hash, dsaEncoding } = this.#signature;
    return sign(hash, data, dsaEncoding ? { key: this.#private, dsaEncoding } : this.#private);
  }
}

/** The engine's `jwks.keys`: each private JWK of a known algorithm as a key that signs in process, others as given. */
export function signingKeysForEngine(jwks: readonly JWK[]): (JWK | ExternalSigningKey)[] {
  return jwks.map((jwk) => {
    const signature = jwk.alg ? SIGNATURE[jwk.alg] : undefined;
    if (!signature || !jwk.kid || !jwk.alg || !jwk.d) return jwk;
    return new InProcessSigningKey(jwk as JWK & { kid: string; alg: string }, signature);
  });
}
