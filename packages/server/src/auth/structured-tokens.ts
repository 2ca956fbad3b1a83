/// <reference path="./oidc-provider-internals.d.ts" />
import { decodeProtectedHeader } from 'jose';
import type { KoaContextWithOIDC } from 'oidc-provider';
import introspectionSteps from 'oidc-provider/lib/actions/introspection.js';
import revocationSteps from 'oidc-provider/lib/actions/revocation.js';
import rejectStructuredTokens from 'oidc-provider/lib/shared/reject_structured_tokens.js';

/**
 * The engine refuses JWT access tokens at introspection and revocation, after it has authenticated the caller,
 * by throwing `unsupported_token_type`; carevault answers for those tokens itself (`AuthServer.tokenManagement`).
 * The throw — an error built with two stack captures, then the engine's error handler — cost a fifth of a JWT
 * introspection's CPU (docs/performance.md). This step leaves the same answer for `tokenManagement` without
 * throwing, and otherwise lets the engine go on exactly as its own step does.
 */
async function answerStructuredTokens(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
  if (isJwt((ctx.oidc.params as { token?: unknown }).token)) {
    ctx.status = 400;
    ctx.body = {
      error: 'unsupported_token_type',
      error_description: `Structured JWT Tokens cannot be ${ctx.oidc.route === 'revocation' ? 'revoked' : 'introspected'} here`,
    };
    return;
  }
  await next();
}

function isJwt(token: unknown): boolean {
  try {
    return typeof token === 'string' && !!decodeProtectedHeader(token);
  } catch {
    return false;
  }
}

/**
 * Puts `answerStructuredTokens` in place of the engine's step in its introspection and revocation action lists,
 * which the engine copies into its routes when a `Provider` is built — so this runs before `new Provider`.
 * Idempotent; returns how many of the two lists now hold our step (2 unless an engine upgrade moved them).
 */
export function answerStructuredTokensWithoutThrowing(): number {
  let placed = 0;
  for (const steps of [introspectionSteps, revocationSteps]) {
    const at = steps.indexOf(rejectStructuredTokens);
    if (at >= 0) steps[at] = answerStructuredTokens;
    if (steps.includes(answerStructuredTokens)) placed++;
  }
  return placed;
}
