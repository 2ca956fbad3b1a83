import { interactionPolicy } from 'oidc-provider';

/**
 * The engine's prompts (login, then consent) with one check first: a browser session whose account was since
 * disabled (`carevault user disable`) or removed must sign in again. The engine's own login check looks only at
 * the session's account id, so it went on to the consent prompt without an account and failed with a 500.
 */
export function signInPolicy(): interactionPolicy.DefaultPolicy {
  const policy = interactionPolicy.base();
  policy
    .get('login')
    ?.checks.add(
      new interactionPolicy.Check(
        'account_unavailable',
        'the signed-in account is no longer available',
        (ctx) => ctx.oidc.session?.accountId !== undefined && ctx.oidc.account === undefined,
      ),
      0,
    );
  return policy;
}
