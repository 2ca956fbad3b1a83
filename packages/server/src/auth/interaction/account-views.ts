import { escapeHtml, page } from './layout.ts';
import { signInFields } from './views.ts';

export interface AccountLoginView {
  csrf: string;
  username?: string | undefined;
  error?: string | undefined;
}

export function accountLoginPage(v: AccountLoginView, nonce: string): string {
  return page(
    'Your account',
    `<h1>Your account</h1>
<p>Sign in to see which apps may use your health record, and to withdraw their access.</p>
${v.error ? `<p class="alert" role="alert" id="login-error">${escapeHtml(v.error)}</p>` : ''}
<form method="post" action="/account/login" novalidate>
${signInFields(v)}
</form>`,
    nonce,
  );
}

/** One consent as the account page shows it. */
export interface ConsentItem {
  grantId: string;
  appName: string;
  /** What the app may do, in words, with the scope beside it. */
  scopes: { text: string; scope: string }[];
  /** The record it was given for (`Patient/<id>` in a vault), when the consent names one. */
  patient?: string | undefined;
  given?: string | undefined;
  until?: string | undefined;
}

/** One patient the person acts for (a delegation, seed 004), as the account page shows it. */
export interface DelegationItem {
  vault: string;
  patientId: string;
  /** `Patient/<id> (<vault>)`, as consents name their record. */
  patient: string;
  scopes: { text: string; scope: string }[];
  since: string;
}

export interface AccountView {
  username: string;
  csrf: string;
  consents: ConsentItem[];
  delegations?: DelegationItem[] | undefined;
  notice?: string | undefined;
  /** Why the last password change was refused. */
  passwordError?: string | undefined;
}

const day = (iso: string | undefined) => (iso ? escapeHtml(iso.slice(0, 10)) : '');

export function accountPage(v: AccountView, nonce: string): string {
  const items = v.consents
    .map(
      (c) => `<section class="consent" aria-label="${escapeHtml(c.appName)}">
<h2>${escapeHtml(c.appName)}</h2>
${c.patient ? `<p>Record: <strong>${escapeHtml(c.patient)}</strong></p>` : ''}
<ul>${c.scopes.map((s) => `<li>${escapeHtml(s.text)}<small>${escapeHtml(s.scope)}</small></li>`).join('')}</ul>
<p class="note">${c.given ? `Allowed on ${day(c.given)}` : ''}${c.until ? `${c.given ? '; ' : ''}until ${day(c.until)}` : ''}</p>
<form method="post" action="/account/consents/withdraw">
<input type="hidden" name="csrf" value="${escapeHtml(v.csrf)}">
<input type="hidden" name="grant" value="${escapeHtml(c.grantId)}">
<div class="actions"><button type="submit" class="secondary">Withdraw access</button></div>
</form>
</section>`,
    )
    .join('');
  return page(
    'Apps with access',
    `<h1>Apps with access</h1>
<p>Signed in as <strong>${escapeHtml(v.username)}</strong>.</p>
${v.notice ? `<p class="notice" role="status">${escapeHtml(v.notice)}</p>` : ''}
${items || '<p>No app has access to your record.</p>'}
<p class="note">An app whose access you withdraw is signed out at once; it has to ask you again.</p>
${delegationsSection(v.delegations ?? [], v.csrf)}
<section class="consent" aria-label="Password">
<h2>Change your password</h2>
${v.passwordError ? `<p class="alert" role="alert" id="password-error">${escapeHtml(v.passwordError)}</p>` : ''}
<form method="post" action="/account/password" novalidate>
<input type="hidden" name="csrf" value="${escapeHtml(v.csrf)}">
<input type="text" name="username" autocomplete="username" value="${escapeHtml(v.username)}" hidden>
<label for="current">Current password</label>
<input type="password" id="current" name="current" autocomplete="current-password" required>
<label for="new">New password (at least 8 characters)</label>
<input type="password" id="new" name="new" autocomplete="new-password" minlength="8" required>
<label for="again">New password again</label>
<input type="password" id="again" name="again" autocomplete="new-password" minlength="8" required>
<div class="actions"><button type="submit" class="secondary">Change password</button></div>
</form>
</section>
<form method="post" action="/account/logout">
<input type="hidden" name="csrf" value="${escapeHtml(v.csrf)}">
<div class="actions"><button type="submit" class="secondary">Sign out</button></div>
</form>`,
    nonce,
  );
}

/** The records the person may use for someone else; an administrator gives and ends these. */
function delegationsSection(delegations: DelegationItem[], csrf: string): string {
  if (delegations.length === 0) return '';
  const items = delegations
    .map(
      (d) => `<section class="consent" aria-label="${escapeHtml(d.patient)}">
<h3>${escapeHtml(d.patient)}</h3>
<ul>${d.scopes.map((s) => `<li>${escapeHtml(s.text)}<small>${escapeHtml(s.scope)}</small></li>`).join('')}</ul>
<p class="note">Since ${day(d.since)}</p>
<form method="post" action="/account/delegations/end">
<input type="hidden" name="csrf" value="${escapeHtml(csrf)}">
<input type="hidden" name="vault" value="${escapeHtml(d.vault)}">
<input type="hidden" name="patient" value="${escapeHtml(d.patientId)}">
<div class="actions"><button type="submit" class="secondary">Stop acting for them</button></div>
</form>
</section>`,
    )
    .join('');
  return `<section aria-label="You act for">
<h2>You act for</h2>
<p>You may use these people\u2019s records for them. Only the care provider can give this; you can stop it here.</p>
${items}
</section>`;
}
