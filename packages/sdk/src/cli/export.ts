import { createWriteStream, existsSync, linkSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { FhirClient } from '../fhir-client.js';
import type { OperationOutcome, Resource } from '../fhir-types.js';
import { tlsFetch } from '../node.js';
import { bulkExport, deletedBundles, exportErrors, exportedResources } from '../workflows/bulk/export.js';
import { CLIENT_OPTIONS, checkCertificate, mtlsTokens, read, USAGE, UsageError } from './common.js';

/** `carevault-client export`: a Bulk Data export into one NDJSON file per type, the manifest on stdout. */
export async function exportData(args: string[]): Promise<number> {
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
