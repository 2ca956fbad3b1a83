import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CarevaultError } from '../errors.js';
import { TokenManager } from '../token-manager.js';

export const USAGE = `usage: carevault-client scp-sync --issuer <url> --client-id <id> --cert <pem> --key <pem> [--ca <pem>]
         --mpi-id <urn:cara:mpi_id:…> (--org-gln <gln> | --org-id <urn:cara:org_id:…>) --observations <file.json|file.ndjson>
         [--dry-run] [--batch-size N] [--scope "…"] [--external-system NAME] [--fhir-root URL] [--aim-base URL]
       carevault-client submit-data --measure <id|canonical> --receiving <fhir base> --ehr <fhir base>
         --period-start YYYY-MM-DD --period-end YYYY-MM-DD --patient <id>… --reporter Organization/<id>
         --issuer <url> --client-id <id> --cert <pem> --key <pem> [--ca <pem>] [--scope "…"]
         [--ehr-issuer <url>] [--ehr-client-id <id>] [--ehr-cert <pem> --ehr-key <pem>] [--ehr-scope "…"]
       carevault-client query --directory <url> --organization <oid> --client-id <fqdn> --cert <pem> --key <pem>
         [--ca <pem>] [--scope "…"] [--token-uri <name>]… <relative FHIR path, e.g. "Patient?name=Smith">
       carevault-client export --base <fhir base> --issuer <url> --client-id <id> --cert <pem> --key <pem> --out <dir>
         [--ca <pem>] [--scope "…"] [--patients | --group <id>] [--patient <id>]… [--type <Type>]…
         [--since <instant>] [--type-filter "Type?search"]… [--timeout <seconds>]`;

export class UsageError extends CarevaultError {}

/** Who the command authenticates as: a client certificate and its key (mTLS), the CA, the scope to ask for. */
export const CLIENT_OPTIONS = {
  'client-id': { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  ca: { type: 'string' },
  scope: { type: 'string' },
} as const;

export function read(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(
      `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
}

/** Tokens for a client that authenticates with its certificate (tls_client_auth), as every command here does. */
export function mtlsTokens(
  issuer: string,
  clientId: string,
  fetch: typeof globalThis.fetch,
  scope: string | undefined,
) {
  return new TokenManager({
    issuer,
    clientId,
    auth: { method: 'tls_client_auth' },
    fetch,
    ...(scope ? { scope } : {}),
  });
}

/** Refused before any request: an expired or not yet valid certificate would only earn a bare invalid_client. */
export function checkCertificate(pem: string, path: string): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch {
    throw new UsageError(`${path} is not a PEM certificate`);
  }
  const now = Date.now();
  if (Date.parse(cert.validTo) < now) throw new UsageError(`the client certificate ${path} expired on ${cert.validTo}`);
  if (Date.parse(cert.validFrom) > now)
    throw new UsageError(`the client certificate ${path} is valid only from ${cert.validFrom}`);
}
