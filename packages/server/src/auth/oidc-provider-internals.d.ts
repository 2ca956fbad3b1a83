// The two action lists and the step that `structured-tokens.ts` replaces (oidc-provider ~9.13, plain JS).
declare module 'oidc-provider/lib/actions/introspection.js' {
  import type { KoaContextWithOIDC } from 'oidc-provider';

  const steps: Array<(ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<void>>;
  export default steps;
}
declare module 'oidc-provider/lib/actions/revocation.js' {
  import type { KoaContextWithOIDC } from 'oidc-provider';

  const steps: Array<(ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<void>>;
  export default steps;
}
declare module 'oidc-provider/lib/shared/reject_structured_tokens.js' {
  import type { KoaContextWithOIDC } from 'oidc-provider';

  const step: (ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<void>;
  export default step;
}
