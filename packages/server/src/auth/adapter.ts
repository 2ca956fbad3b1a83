import type { Adapter, AdapterPayload } from 'oidc-provider';
import type { Store } from '../store/types.ts';
import type { ClientRegistry } from './clients.ts';
import type { NetworkClients } from './trust/network-clients.ts';

const nowSeconds = () => Math.floor(Date.now() / 1000);
/** How long a claimed jti is remembered: longer than client assertions (≤ 5 min) and DPoP proofs live. */
const REPLAY_CLAIM_SECONDS = 3600;

/**
 * oidc-provider's storage adapter over the carevault store. Clients come from the registry
 * (disabled ones do not exist for the engine); every other model is a row in oidc_payloads.
 */
export function createAdapterFactory(store: Store, clients: ClientRegistry, network: NetworkClients) {
  return (model: string): Adapter => {
    if (model === 'Client') {
      return {
        async find(id) {
          const member = await network.metadata(id);
          if (member !== null) return member as AdapterPayload | undefined;
          return (await clients.engineMetadata(id)) as AdapterPayload | undefined;
        },
        async upsert() {
          throw new Error('clients are registered with `carevault client add`, not through the engine');
        },
        async findByUid() {
          return undefined;
        },
        async findByUserCode() {
          return undefined;
        },
        async consume() {},
        async destroy() {},
        async revokeByGrantId() {},
      };
    }
    return {
      async upsert(id, payload, expiresIn) {
        // find() already claimed this jti for longer than any assertion may live; a second write buys nothing.
        if (model === 'ReplayDetection' && expiresIn !== undefined && expiresIn <= REPLAY_CLAIM_SECONDS) return;
        const expiresAt = expiresIn ? nowSeconds() + expiresIn : null;
        await store.oidc.upsert(model, id, payload as Record<string, unknown>, expiresAt, {
          grantId: payload.grantId,
          userCode: payload.userCode,
          uid: payload.uid,
        });
      },
      async find(id) {
        if (model === 'ReplayDetection') {
          // Claim the id atomically here: oidc-provider's find-then-save would let two concurrent
          // requests with the same jti both pass.
          const fresh = await store.oidc.insertIfAbsent(model, id, nowSeconds() + REPLAY_CLAIM_SECONDS);
          return fresh ? undefined : { jti: id };
        }
        return (await store.oidc.find(model, id))?.payload as AdapterPayload | undefined;
      },
      async findByUid(uid) {
        return (await store.oidc.findBy(model, 'uid', uid))?.payload as AdapterPayload | undefined;
      },
      async findByUserCode(userCode) {
        return (await store.oidc.findBy(model, 'user_code', userCode))?.payload as AdapterPayload | undefined;
      },
      async consume(id) {
        await store.oidc.consume(model, id, nowSeconds());
      },
      async destroy(id) {
        await store.oidc.destroy(model, id);
      },
      async revokeByGrantId(grantId) {
        await store.oidc.revokeByGrantId(grantId);
      },
    };
  };
}
