import { parseArgs } from 'node:util';
import { AccountNotFoundError } from './aim-client.js';
import { CLIENT_OPTIONS, checkCertificate, mtlsTokens, read, USAGE, UsageError } from './cli/common.js';
import { exportData } from './cli/export.js';
import { CarevaultError, FhirResponseError, OAuthError, TransportError } from './errors.js';
import { FhirClient } from './fhir-client.js';
import { tlsFetch } from './node.js';
import { submitMeasureData } from './workflows/deqm/submit.js';
import { connectViaDirectory } from './workflows/network/connect.js';
import { parseCandidates } from './workflows/scp/candidates.js';
import { syncSharedCarePlan } from './workflows/scp/sync.js';

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
