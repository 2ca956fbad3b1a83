import { X509Certificate } from 'node:crypto';
import { createWriteStream, existsSync, linkSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { AccountNotFoundError } from './aim-client.js';
import { CarevaultError, FhirResponseError, OAuthError, TransportError } from './errors.js';
import { FhirClient } from './fhir-client.js';
import type { OperationOutcome, Resource } from './fhir-types.js';
import { tlsFetch } from './node.js';
import { TokenManager } from './token-manager.js';
import { bulkExport, deletedBundles, exportErrors, exportedResources } from './workflows/bulk/export.js';
import { submitMeasureData } from './workflows/deqm/submit.js';
import { connectViaDirectory } from './workflows/network/connect.js';
import { parseCandidates } from './workflows/scp/candidates.js';
import { syncSharedCarePlan } from './workflows/scp/sync.js';

const USAGE = `usage: carevault-client scp-sync --issuer <url> --client-id <id> --cert <pem> --key <pem> [--ca <pem>]
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

class UsageError extends CarevaultError {}

/** Who the command authenticates as: a client certificate and its key (mTLS), the CA, the scope to ask for. */
const CLIENT_OPTIONS = {
  'client-id': { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  ca: { type: 'string' },
  scope: { type: 'string' },
} as const;

function read(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(
      `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
}

/** Tokens for a client that authenticates with its certificate (tls_client_auth), as every command here does. */
function mtlsTokens(issuer: string, clientId: string, fetch: typeof globalThis.fetch, scope: string | undefined) {
  return new TokenManager({
    issuer,
    clientId,
    auth: { method: 'tls_client_auth' },
    fetch,
    ...(scope ? { scope } : {}),
  });
}

/** Refused before any request: an expired or not yet valid certificate would only earn a bare invalid_client. */
function checkCertificate(pem: string, path: string): void {
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

async function scpSync(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      issuer: { type: 'string' },
      ...CLIENT_OPTIONS,
      'mpi-id': { type: 'string' },
      'org-gln': { type: 'string' },
      'org-id': { type: 'string' },
      observations: { type: 'string' },
      'dry-run': { type: 'boolean' },
      'batch-size': { type: 'string' },
      'external-system': { type: 'string' },
      'fhir-root': { type: 'string' },
      'aim-base': { type: 'string' },
    },
    strict: true,
  });
  for (const required of ['issuer', 'client-id', 'cert', 'key', 'mpi-id', 'observations'] as const) {
    if (!values[required]) throw new UsageError(`--${required} is required\n${USAGE}`);
  }
  if (!values['org-gln'] === !values['org-id'])
    throw new UsageError(`give exactly one of --org-gln or --org-id\n${USAGE}`);
  const batchSize = values['batch-size'] === undefined ? undefined : Number(values['batch-size']);
  if (batchSize !== undefined && (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 1000)) {
    throw new UsageError('--batch-size must be a whole number from 1 to 1000');
  }
  const cert = read(values.cert as string, 'the client certificate');
  checkCertificate(cert, values.cert as string);
  const key = read(values.key as string, 'the client key');
  const ca = values.ca ? read(values.ca, 'the CA certificate') : undefined;
  const candidates = parseCandidates(read(values.observations as string, 'the observations'), values.observations);
  const fetch = tlsFetch({ cert, key, ...(ca ? { ca } : {}) });
  try {
    const clientId = values['client-id'] as string;
    const tokens = mtlsTokens(values.issuer as string, clientId, fetch, values.scope);
    const result = await syncSharedCarePlan({
      issuer: values.issuer as string,
      tokens,
      fetch,
      mpiId: values['mpi-id'] as string,
      organization: values['org-gln'] ? { gln: values['org-gln'] } : { orgId: values['org-id'] },
      externalSystem: values['external-system'] ?? clientId,
      candidates,
      ...(values['dry-run'] ? { dryRun: true } : {}),
      ...(batchSize ? { batchSize } : {}),
      ...(values['fhir-root'] ? { fhirRoot: values['fhir-root'] } : {}),
      ...(values['aim-base'] ? { aimBase: values['aim-base'] } : {}),
      onRetry: (i) => process.stderr.write(`retrying ${i.method} ${i.url} (${i.reason}) in ${i.delayMs} ms\n`),
    });
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    if (result.failed.length > 0) {
      process.stderr.write(
        `error: ${result.failed.length} observation(s) were refused: ${result.failed[0]?.diagnostics}\n`,
      );
      return 1;
    }
    return 0;
  } finally {
    await fetch.close();
  }
}

/**
 * DEQM submit-data (seed 002): data requirements from the receiving server, the data from the EHR, one
 * $submit-data per patient. Both servers take tls_client_auth tokens (the EHR with its own issuer and client
 * when given, with the same certificate unless --ehr-cert); an EHR without --ehr-client-id is called without one.
 */
async function submitData(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      measure: { type: 'string' },
      receiving: { type: 'string' },
      ehr: { type: 'string' },
      'period-start': { type: 'string' },
      'period-end': { type: 'string' },
      patient: { type: 'string', multiple: true },
      reporter: { type: 'string' },
      issuer: { type: 'string' },
      ...CLIENT_OPTIONS,
      'ehr-issuer': { type: 'string' },
      'ehr-client-id': { type: 'string' },
      'ehr-cert': { type: 'string' },
      'ehr-key': { type: 'string' },
      'ehr-scope': { type: 'string' },
    },
    strict: true,
  });
  for (const required of [
    'measure',
    'receiving',
    'ehr',
    'period-start',
    'period-end',
    'reporter',
    'issuer',
    'client-id',
    'cert',
    'key',
  ] as const) {
    if (!values[required]) throw new UsageError(`--${required} is required\n${USAGE}`);
  }
  if (!values.patient?.length) throw new UsageError(`give at least one --patient\n${USAGE}`);
  if (!values['ehr-cert'] !== !values['ehr-key']) throw new UsageError('give --ehr-cert and --ehr-key together');
  const cert = read(values.cert as string, 'the client certificate');
  checkCertificate(cert, values.cert as string);
  const key = read(values.key as string, 'the client key');
  const ca = values.ca ? read(values.ca, 'the CA certificate') : undefined;
  const ehrCert = values['ehr-cert'] ? read(values['ehr-cert'], 'the EHR client certificate') : cert;
  if (values['ehr-cert']) checkCertificate(ehrCert, values['ehr-cert']);
  const ehrKey = values['ehr-key'] ? read(values['ehr-key'], 'the EHR client key') : key;
  const fetch = tlsFetch({ cert, key, ...(ca ? { ca } : {}) });
  const ehrFetch = tlsFetch({ cert: ehrCert, key: ehrKey, ...(ca ? { ca } : {}) });
  const onRetry = (i: { method: string; url: string; reason: string; delayMs: number }) =>
    process.stderr.write(`retrying ${i.method} ${i.url} (${i.reason}) in ${i.delayMs} ms\n`);
  try {
    const tokens = mtlsTokens(values.issuer as string, values['client-id'] as string, fetch, values.scope);
    const ehrTokens = values['ehr-client-id']
      ? mtlsTokens(
          values['ehr-issuer'] ?? (values.issuer as string),
          values['ehr-client-id'],
          ehrFetch,
          values['ehr-scope'],
        )
      : undefined;
    const result = await submitMeasureData({
      receiving: new FhirClient({ baseUrl: values.receiving as string, tokens, fetch, onRetry }),
      ehr: new FhirClient({
        baseUrl: values.ehr as string,
        fetch: ehrFetch,
        onRetry,
        ...(ehrTokens ? { tokens: ehrTokens } : {}),
      }),
      measure: values.measure as string,
      periodStart: values['period-start'] as string,
      periodEnd: values['period-end'] as string,
      patients: values.patient,
      reporter: values.reporter as string,
    });
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return 0;
  } finally {
    await fetch.close();
    await ehrFetch.close();
  }
}

/**
 * Seed 003: look the organization up in the directory, authenticate with the network certificate (x5c) at the
 * token URI its CapabilityStatement names, and print the answer to one FHIR request.
 */
async function query(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      directory: { type: 'string' },
      organization: { type: 'string' },
      ...CLIENT_OPTIONS,
      'token-uri': { type: 'string', multiple: true },
    },
    allowPositionals: true,
    strict: true,
  });
  for (const required of ['directory', 'organization', 'client-id', 'cert', 'key'] as const) {
    if (!values[required]) throw new UsageError(`--${required} is required\n${USAGE}`);
  }
  const [path, ...extra] = positionals;
  if (!path || extra.length > 0) throw new UsageError(`give exactly one relative FHIR path\n${USAGE}`);
  if (/^[a-z][a-z0-9+.-]*:|^\/|(^|\/)\.\.(\/|$)/i.test(path))
    throw new UsageError(`"${path}" must be relative to the provider's FHIR base, e.g. Patient?name=Smith`);
  const certificate = read(values.cert as string, 'the client certificate');
  checkCertificate(certificate, values.cert as string);
  const key = read(values.key as string, 'the client key');
  // The certificate is also presented over TLS: a provider may bind the token to it (RFC 8705).
  const fetch = tlsFetch({ cert: certificate, key, ...(values.ca ? { ca: read(values.ca, 'the CA file') } : {}) });
  try {
    const client = await connectViaDirectory({
      directory: values.directory as string,
      organization: values.organization as string,
      clientId: values['client-id'] as string,
      certificate,
      key,
      fetch,
      ...(values.scope ? { scope: values.scope } : {}),
      ...(values['token-uri'] ? { tokenUriPreference: values['token-uri'] } : {}),
    });
    const answer = await client.body('GET', path);
    process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
    return 0;
  } finally {
    await fetch.close();
  }
}

/**
 * Bulk Data export into `<out>/<Type>.ndjson`, one file per type the server exported, `<out>/errors.ndjson` when
 * the server left something out, and `<out>/deleted.ndjson` (the IG's transaction Bundles of DELETE entries) when
 * a `--since` export names resources deleted since; prints the manifest.
 */
async function exportData(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      base: { type: 'string' },
      issuer: { type: 'string' },
      ...CLIENT_OPTIONS,
      out: { type: 'string' },
      patients: { type: 'boolean' },
      group: { type: 'string' },
      patient: { type: 'string', multiple: true },
      type: { type: 'string', multiple: true },
      since: { type: 'string' },
      'type-filter': { type: 'string', multiple: true },
      timeout: { type: 'string' },
    },
    strict: true,
  });
  for (const required of ['base', 'issuer', 'client-id', 'cert', 'key', 'out'] as const) {
    if (!values[required]) throw new UsageError(`--${required} is required\n${USAGE}`);
  }
  if (values.patients && values.group) throw new UsageError('give --patients or --group, not both');
  if (values.patient?.length && !values.patients && !values.group)
    throw new UsageError('--patient needs --patients or --group (a patient- or group-level export)');
  if (values.since !== undefined && Number.isNaN(Date.parse(values.since)))
    throw new UsageError(`--since must be an instant such as 2024-01-01T00:00:00Z, not "${values.since}"`);
  const timeout = values.timeout === undefined ? 3600 : Number(values.timeout);
  if (!/^\d+$/.test(values.timeout ?? '3600') || timeout < 1 || timeout > 86_400)
    throw new UsageError('--timeout is a whole number of seconds from 1 to 86400');
  const out = values.out as string;
  const cert = read(values.cert as string, 'the client certificate');
  checkCertificate(cert, values.cert as string);
  const key = read(values.key as string, 'the client key');
  const fetch = tlsFetch({ cert, key, ...(values.ca ? { ca: read(values.ca, 'the CA certificate') } : {}) });
  try {
    const tokens = mtlsTokens(values.issuer as string, values['client-id'] as string, fetch, values.scope);
    const client = new FhirClient({ baseUrl: values.base as string, tokens, fetch });
    const { manifest } = await bulkExport(client, {
      level: values.group ? { group: values.group } : values.patients ? 'patient' : 'system',
      ...(values.type ? { types: values.type } : {}),
      ...(values.since ? { since: values.since } : {}),
      ...(values['type-filter'] ? { typeFilters: values['type-filter'] } : {}),
      ...(values.patient ? { patients: values.patient } : {}),
      timeoutMs: timeout * 1000,
      onProgress: (p) => process.stderr.write(`export ${p ?? 'in progress'}\n`),
    });
    mkdirSync(out, { recursive: true });
    for (const file of manifest.output)
      await writeExported(exportedResources(client, manifest, file.type), join(out, `${file.type}.ndjson`));
    if (manifest.error.length > 0) {
      // What the server left out, and why: kept beside the data, and said where a person sees it.
      await writeExported(tell(exportErrors(client, manifest)), join(out, 'errors.ndjson'));
    }
    if (manifest.deleted?.length) await writeExported(deletedBundles(client, manifest), join(out, 'deleted.ndjson'));
    process.stdout.write(`${JSON.stringify(manifest, null, 2)}\n`);
    return 0;
  } finally {
    await fetch.close();
  }
}

/**
 * One type's resources streamed into `path`, which appears only when the download is whole: they are written
 * to a partial file first, then linked to its name, which never replaces an earlier export's file. Health
 * data, readable by its owner only.
 */
async function writeExported(resources: AsyncIterable<Resource>, path: string) {
  if (existsSync(path)) throw Object.assign(new Error('exists'), { code: 'EEXIST', path });
  const partial = `${path}.partial`;
  const file = createWriteStream(partial, { flags: 'wx', mode: 0o600 });
  try {
    await pipeline(async function* () {
      for await (const r of resources) yield `${JSON.stringify(r)}\n`;
    }, file);
    linkSync(partial, path);
  } finally {
    rmSync(partial, { force: true });
  }
}

/** Each issue of the export's error files on stderr, as it is written. */
async function* tell(outcomes: AsyncIterable<OperationOutcome>): AsyncGenerator<OperationOutcome> {
  for await (const o of outcomes) {
    for (const i of o.issue ?? []) process.stderr.write(`export ${i.severity}: ${i.diagnostics ?? i.code}\n`);
    yield o;
  }
}

/** One line a person can act on, whatever went wrong. */
function describe(err: unknown): string {
  if (err instanceof AccountNotFoundError) return err.message;
  if (err instanceof OAuthError) return `the authorization server refused the token request: ${err.message}`;
  if (err instanceof FhirResponseError) return err.message;
  if (err instanceof TransportError)
    return `${err.message}${err.cause ? ` (${(err.cause as Error).message ?? ''})` : ''}`;
  if (err instanceof CarevaultError) return err.message;
  if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) return `${(err as Error).message}\n${USAGE}`;
  const fsError = err as NodeJS.ErrnoException & { dest?: string };
  if (fsError.code === 'EEXIST')
    return `${fsError.dest ?? fsError.path} exists already: give an --out directory without earlier exports`;
  if (fsError.syscall && fsError.path) return `cannot ${fsError.syscall} ${fsError.path} (${fsError.code})`;
  return `unexpected: ${(err as Error)?.message ?? String(err)}`;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === 'scp-sync') return await scpSync(rest);
    if (command === 'submit-data') return await submitData(rest);
    if (command === 'query') return await query(rest);
    if (command === 'export') return await exportData(rest);
    if (command === '--help' || command === '-h' || command === 'help') {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    process.stderr.write(`${command ? `unknown command "${command}"\n` : ''}${USAGE}\n`);
    return 2;
  } catch (err) {
    process.stderr.write(`error: ${describe(err)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
