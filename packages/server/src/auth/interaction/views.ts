import { escapeHtml, page } from './layout.ts';

/** The fields of a sign-in form (CSRF token, user name, password, the button), shared by every page that signs in. */
export function signInFields(v: { csrf: string; username?: string | undefined; error?: string | undefined }): string {
  return `<input type="hidden" name="csrf" value="${escapeHtml(v.csrf)}">
<label for="username">User name</label>
<input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required value="${escapeHtml(v.username ?? '')}"${v.error ? ' aria-describedby="login-error"' : ''}>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<div class="actions"><button type="submit" class="primary">Sign in</button></div>`;
}

export interface LoginView {
  uid: string;
  csrf: string;
  appName: string;
  username?: string | undefined;
  error?: string | undefined;
}

export function loginPage(v: LoginView, nonce: string): string {
  return page(
    'Sign in',
    `<h1>Sign in</h1>
<p><strong>${escapeHtml(v.appName)}</strong> wants to use your health record. Sign in to continue.</p>
${v.error ? `<p class="alert" role="alert" id="login-error">${escapeHtml(v.error)}</p>` : ''}
<form method="post" action="/oauth/interaction/${escapeHtml(v.uid)}/login" novalidate>
${signInFields(v)}
</form>
<form method="post" action="/oauth/interaction/${escapeHtml(v.uid)}/abort">
<input type="hidden" name="csrf" value="${escapeHtml(v.csrf)}">
<div class="actions"><button type="submit" class="secondary">Cancel</button></div>
</form>`,
    nonce,
  );
}

export interface ScopeChoice {
  scope: string;
  text: string;
  /** Needed for the launch itself (openid, launch/patient…): shown, not optional. */
  fixed: boolean;
}

export interface PatientChoice {
  value: string;
  label: string;
  detail: string;
}

export interface ConsentView {
  uid: string;
  csrf: string;
  appName: string;
  username: string;
  scopes: ScopeChoice[];
  /** Shown when the app asks for a patient and none comes from an EHR launch. */
  patients?: PatientChoice[] | undefined;
  /** The patient an EHR launch fixed, shown for information. */
  launchPatient?: string | undefined;
  error?: string | undefined;
}

export function consentPage(v: ConsentView, nonce: string): string {
  const patientBlock = v.patients
    ? v.patients.length === 0
      ? '<p class="alert" role="alert">There is no patient record you may share with this app here.</p>'
      : `<fieldset><legend>Which patient?</legend>${v.patients
          .map(
            (p, i) =>
              `<div class="choice"><input type="radio" id="patient-${i}" name="patient" value="${escapeHtml(p.value)}"${
                i === 0 ? ' checked' : ''
              } required><label for="patient-${i}">${escapeHtml(p.label)}<small>${escapeHtml(p.detail)}</small></label></div>`,
          )
          .join('')}</fieldset>`
    : v.launchPatient
      ? `<p>Patient: <strong>${escapeHtml(v.launchPatient)}</strong></p>`
      : '';
  const scopeBlock = `<fieldset><legend>Allow the app to</legend>${v.scopes
    .map(
      (s, i) =>
        `<div class="choice"><input type="checkbox" id="scope-${i}" name="scope" value="${escapeHtml(s.scope)}" checked${
          s.fixed ? ' disabled' : ''
        }><label for="scope-${i}">${escapeHtml(s.text)}<small>${escapeHtml(s.scope)}</small></label></div>`,
    )
    .join('')}</fieldset>`;
  const canAllow = !(v.patients && v.patients.length === 0);
  return page(
    'Allow access',
    `<h1>Allow ${escapeHtml(v.appName)}?</h1>
<p>Signed in as <strong>${escapeHtml(v.username)}</strong>. Untick anything you do not want to share.</p>
${v.error ? `<p class="alert" role="alert">${escapeHtml(v.error)}</p>` : ''}
<form method="post" action="/oauth/interaction/${escapeHtml(v.uid)}/consent">
<input type="hidden" name="csrf" value="${escapeHtml(v.csrf)}">
${patientBlock}${scopeBlock}
<p class="note">The app keeps this access until it expires or you withdraw it; it then has to ask again.</p>
<div class="actions">${
      canAllow ? '<button type="submit" name="decision" value="allow" class="primary">Allow</button>' : ''
    }<button type="submit" name="decision" value="deny" class="secondary">Deny</button></div>
</form>`,
    nonce,
  );
}
