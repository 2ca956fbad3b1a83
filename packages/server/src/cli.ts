import { CarevaultError } from '@carevault/sdk';
import { Command, Option } from 'commander';
import { auditExport, auditPrune, auditVerify, auditVerifyFile } from './admin/audit.ts';
import { addClient, listClients, setClientDisabled } from './admin/clients.ts';
import { dbMigrate, dbStatus } from './admin/database.ts';
import { directoryAdd } from './admin/directory.ts';
import { importCommand } from './admin/import.ts';
import { launchCreate } from './admin/people.ts';
import { trustAdd, trustList, trustRemove } from './admin/trust.ts';
import { userCommands } from './admin/user-commands.ts';
import { accountAdd, grantAdd, grantList, grantRemove, partitionAdd, partitionList, withStore } from './admin/vault.ts';
import { AuditArchiveError } from './audit/archive.ts';
import { ClientInputError } from './auth/clients.ts';
import { KeyRing, SIGNING_ALGS, type SigningAlg } from './auth/keys.ts';
import { LaunchInputError } from './auth/launch-api.ts';
import { adminConfig, ConfigError, type ConfigInput, loadConfig } from './config/index.ts';
import { IdpInputError } from './saml/idps.ts';
import { VaultInputError } from './vault/partitions.ts';
import { viewerCommands } from './viewer/commands.ts';
import { NoConsentError } from './viewer/runtime.ts';
import { ViewerInputError } from './viewer/settings.ts';

const collect = (value: string, previous: string[] = []) => [...previous, value];

function dataDirOption(cmd: Command): Command {
  return cmd.option('--data-dir <dir>', 'data directory (env CAREVAULT_DATA_DIR, default ./data)');
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * One line on stderr and exit code 1: a person's mistake gets its message; anything unexpected gets its message
 * too, and the stack trace only with CAREVAULT_LOG_LEVEL=debug (a stack trace is not an answer to a user).
 */
/** What a file given on the command line cannot be used for, in words (Node's own message names the syscall). */
const FILE_ERRORS: Record<string, string> = {
  EISDIR: 'a directory was given where a file belongs',
  ENOTDIR: 'a part of the path is not a directory',
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
};

function fail(err: unknown): void {
  const fsError = err as NodeJS.ErrnoException;
  const fileError = fsError?.syscall && fsError.code ? FILE_ERRORS[fsError.code] : undefined;
  if (fileError) {
    // A read of an open file (readFileSync of a directory) names no path.
    process.stderr.write(`error: ${fsError.path ? `${fsError.path}: ` : ''}${fileError}\n`);
    process.exitCode = 1;
    return;
  }
  const expected =
    err instanceof ClientInputError ||
    err instanceof ConfigError ||
    err instanceof VaultInputError ||
    err instanceof LaunchInputError ||
    err instanceof ViewerInputError ||
    err instanceof IdpInputError ||
    err instanceof NoConsentError ||
    err instanceof AuditArchiveError ||
    err instanceof CarevaultError;
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`error: ${expected ? message : `${message.split('\n')[0]} (unexpected)`}\n`);
  if (!expected && (process.env.CAREVAULT_LOG_LEVEL === 'debug' || process.env.CAREVAULT_LOG_LEVEL === 'trace')) {
    process.stderr.write(`${(err as Error)?.stack ?? ''}\n`);
  }
  process.exitCode = 1;
}

/** Runs an admin action: JSON on stdout, a one-line error on stderr and exit code 1 on failure. */
async function admin(fn: () => Promise<unknown>): Promise<void> {
  try {
    print(await fn());
  } catch (err) {
    fail(err);
  }
}

const program = new Command('carevault')
  .description('carevault: secure health-data exchange platform')
  .showHelpAfterError();

dataDirOption(
  program
    .command('serve')
    .description('run the platform (HTTPS)')
    .option('--port <n>', 'port (env CAREVAULT_PORT, default 8443)')
    .option('--host <h>', 'bind address (env CAREVAULT_HOST, default 127.0.0.1)')
    .option('--base-url <url>', 'public base URL (env CAREVAULT_BASE_URL, default https://localhost:<port>)')
    .option('--access-token-ttl <seconds>', 'access token lifetime (env CAREVAULT_ACCESS_TOKEN_TTL, default 300)')
    .option(
      '--rate-limit <rate>',
      'requests per client (or address) as <count>/<s|min|h> (env CAREVAULT_RATE_LIMIT, default 6000/min)',
    )
    .option(
      '--trusted-cert-header <name>',
      'header carrying the client certificate from a TLS-terminating proxy (off by default)',
    )
    .option(
      '--trusted-proxies <list>',
      'addresses/CIDR ranges of the proxies whose X-Forwarded-For and certificate header are believed (env CAREVAULT_TRUSTED_PROXIES; default loopback with --trusted-cert-header, else none)',
    )
    .option(
      '--program-server <url>',
      'program server asked before every $submit-data (env CAREVAULT_PROGRAM_SERVER; default: the built-in rule)',
    )
    .option('--public-directory', 'serve /directory without a token (env CAREVAULT_PUBLIC_DIRECTORY=on)'),
).action(async (o: ConfigInput) => {
  try {
    // Imported here so admin commands do not load the OAuth engine.
    const { serve } = await import('./serve.ts');
    await serve(loadConfig(o));
  } catch (err) {
    fail(err);
    process.exit(1);
  }
});

const client = program.command('client').description('manage registered clients (external systems)');
dataDirOption(
  client
    .command('add <client_id>')
    .description('register a client; prints {client_id, client_secret?, cert?, key?}')
    .addOption(
      new Option('--auth <method>', 'client authentication method')
        .choices([
          'tls_client_auth',
          'self_signed_tls_client_auth',
          'private_key_jwt',
          'client_secret_basic',
          'client_secret_post',
          'none',
        ])
        .makeOptionMandatory(),
    )
    .option('--scope <scopes>', 'space-separated scopes the client may be granted')
    .option('--org-oid <oid>', 'organization OID (IUA subject_organization_id)')
    .option('--org-name <name>', 'organization name (IUA subject_organization)')
    .option('--org-gln <gln>', 'organization GLN (13 digits; token claim cara:gln, matched by grants --org-gln)')
    .option('--account-urn <urn>', "the client's own CARA account, urn:cara:account:… (token claim cara:accountUrn)")
    .option('--role <system|code>', 'IUA subject_role (repeatable)', collect)
    .option('--purpose-of-use <code>', 'IUA purpose_of_use the client may claim, e.g. TREAT (repeatable)', collect)
    .option('--jwks <file>', 'JWKS file with the public keys for private_key_jwt')
    .option('--jwks-uri <url>', 'JWKS URL for private_key_jwt')
    .option('--cert <file>', 'certificate to register for self_signed_tls_client_auth (generated if absent)')
    .option('--redirect-uri <url>', 'redirect URI (repeatable)', collect)
    .option('--name <name>', 'app name shown on the login and consent pages')
    .option('--token-format <format>', 'jwt (default) or opaque access tokens')
    .option('--token-alg <alg>', 'ES256 (default) or RS256 access-token signatures')
    .option('--resource-server', "may introspect every client's tokens (ITI-102); others introspect only their own")
    .option(
      '--assert-user-context',
      'may assert the user (IUA subject_*, purpose_of_use) in its client assertion and send X-ZV-Context (seed 001)',
    )
    .option('--aggregator', 'with --assert-user-context: may act for users of other organizations (a regional viewer)')
    .option('--saml-bearer', 'may exchange SAML assertions of registered IdPs for tokens (RFC 7522)')
    .option('--out <dir>', 'where to write issued certificates and keys (default <data-dir>/clients)'),
).action((id: string, o) => admin(() => addClient(adminConfig(o), id, o)));
dataDirOption(client.command('list').description('list clients')).action((o) =>
  admin(() => listClients(adminConfig(o))),
);
dataDirOption(client.command('show <client_id>').description('show one client')).action((id: string, o) =>
  admin(() => listClients(adminConfig(o), id)),
);
dataDirOption(client.command('disable <client_id>').description('disable a client (its token requests fail)')).action(
  (id: string, o) => admin(() => setClientDisabled(adminConfig(o), id, true)),
);
dataDirOption(client.command('enable <client_id>').description('re-enable a disabled client')).action((id: string, o) =>
  admin(() => setClientDisabled(adminConfig(o), id, false)),
);

const keys = program.command('keys').description('token signing keys');
dataDirOption(keys.command('list').description('list signing keys (no key material)')).action((o) =>
  admin(async () => (await KeyRing.open(adminConfig(o).dataDir)).list()),
);
dataDirOption(
  keys
    .command('rotate')
    .description(
      'add a new signing key: published now, signing after --activate-after; the old one stays published for --retention',
    )
    .addOption(new Option('--alg <alg>', 'algorithm').choices([...SIGNING_ALGS]).default('ES256'))
    .option('--activate-after <seconds>', 'delay before the new key signs', '60')
    .option('--retention <seconds>', 'how long the replaced key stays published', '86400'),
).action((o: { alg: SigningAlg; activateAfter: string; retention: string; dataDir?: string }) =>
  admin(async () => {
    // At most ten years: beyond that a key that never signs, or one never unpublished, is a typo, not a plan.
    const seconds = (name: string, value: string) => {
      const n = Number(value);
      if (!/^\d+$/.test(value) || n > 315_360_000) {
        throw new ConfigError(`${name} must be a whole number of seconds, at most 315360000 (ten years)`);
      }
      return n;
    };
    const activateAfter = seconds('--activate-after', o.activateAfter);
    const retention = seconds('--retention', o.retention);
    const ring = await KeyRing.open(adminConfig(o).dataDir);
    const key = await ring.rotate(o.alg, activateAfter, retention);
    return { kid: key.kid, alg: key.alg, activateAt: new Date(key.activateAt * 1000).toISOString() };
  }),
);

const account = program.command('account').description('accounts and their vaults');
dataDirOption(
  account
    .command('add')
    .description('create an account and its vault; prints {accountUrn, partition}')
    .option('--urn <urn>', 'account URN, urn:cara:account:<id> (generated if absent); the partition is <id>')
    .option('--mpi-id <urn>', 'MPI identifier urn:cara:mpi_id:<oid>/<uuid> (repeatable)', collect),
).action((o) => admin(() => accountAdd(adminConfig(o), o)));

const partition = program.command('partition').description('vaults (data partitions)');
dataDirOption(partition.command('add <name>').description('create a vault not tied to an account')).action(
  (name: string, o) => admin(() => partitionAdd(adminConfig(o), name)),
);
dataDirOption(partition.command('list').description('list vaults')).action((o) =>
  admin(() => partitionList(adminConfig(o))),
);

const grant = program.command('grant').description('standing access of clients or organizations to vaults');
dataDirOption(
  grant
    .command('add')
    .description('grant a client, or every client of an organization, access to a vault')
    .requiredOption('--partition <name>', 'the vault')
    .option('--client <client_id>', 'a registered client')
    .option('--org-oid <oid>', 'an organization OID: every client registered for it (client add --org-oid)')
    .option('--org-gln <gln>', 'an organization GLN (matches clients registered with --org-gln)')
    .option('--community <name>', 'every member of a trust community (see `carevault trust`)')
    .requiredOption('--scope <scopes>', 'SMART system scopes, e.g. "system/Observation.cruds system/Patient.rs"'),
).action((o) => admin(() => grantAdd(adminConfig(o), o)));

const trust = program
  .command('trust')
  .description('trust communities: network CAs whose certificate holders authenticate with x5c assertions');
dataDirOption(
  trust
    .command('add <name>')
    .description('trust a network CA (creates or replaces the community)')
    .requiredOption('--ca <pem>', "the network CA's certificate")
    .option('--crl <file|url>', "the network's CRL (PEM or DER), read now; run again to refresh it")
    .option('--scope <scopes>', 'scopes every member may be granted (default "system/*.rs")'),
).action((name: string, o) => admin(() => trustAdd(adminConfig(o), name, o)));
dataDirOption(trust.command('list').description('list trust communities')).action((o) =>
  admin(() => trustList(adminConfig(o))),
);
const directory = program
  .command('directory')
  .description('the network directory (/directory): organizations and their FHIR endpoints');
dataDirOption(
  directory
    .command('add')
    .description('add or replace an organization with its contained FHIR Endpoint')
    .requiredOption('--org-oid <oid>', 'the organization OID (also its id in the directory)')
    .requiredOption('--name <name>', 'the organization name')
    .requiredOption('--fhir-base <url>', 'the FHIR base URL of its endpoint'),
).action((o) => admin(() => directoryAdd(adminConfig(o), o)));
dataDirOption(trust.command('remove <name>').description('stop trusting a community')).action((name: string, o) =>
  admin(() => trustRemove(adminConfig(o), name)),
);
dataDirOption(
  grant
    .command('remove')
    .description("end a grant: the client's or organization's tokens stop reaching the vault at once")
    .requiredOption('--partition <name>', 'the vault')
    .option('--client <client_id>', 'the client the grant names')
    .option('--org-oid <oid>', 'the organization OID the grant names')
    .option('--org-gln <gln>', 'the organization GLN the grant names')
    .option('--community <name>', 'the trust community the grant names'),
).action((o) => admin(() => grantRemove(adminConfig(o), o)));
dataDirOption(grant.command('list').description('list grants').option('--partition <name>', 'only this vault')).action(
  (o) => admin(() => grantList(adminConfig(o), o.partition)),
);

const readStdin = async (): Promise<string> => {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
};

userCommands(program, admin, dataDirOption, readStdin);

const launch = program.command('launch').description('SMART EHR launch contexts');
dataDirOption(
  launch
    .command('create')
    .description('create an EHR launch context; prints {launch, iss, expires_in} to open <app>?iss=…&launch=…')
    .requiredOption('--partition <name>', 'the vault (or its FHIR base URL)')
    .requiredOption('--client <client_id>', 'the app being launched')
    .option('--patient <id>', 'patient in context')
    .option('--encounter <id>', 'encounter in context')
    .option('--fhir-user <ref>', 'the launching user, e.g. Practitioner/abc')
    .option('--no-banner', 'need_patient_banner=false (the EHR shows the patient banner itself)')
    .option('--style-url <url>', 'smart_style_url')
    .option('--host <client_id>', "EHR host client whose grants bound the user (default: the user's own rights)"),
).action((o) => admin(() => launchCreate(adminConfig(o), o)));

const audit = program.command('audit').description('the audit trail (BALP AuditEvents, hash-chained)');
dataDirOption(
  audit
    .command('verify')
    .description(
      'check the hash chain of every AuditEvent (from the checkpoint of the last prune); exit 1 and name the first bad event when one was altered or deleted',
    )
    .option('--file <export>', 'verify an export file (audit export) on its own instead of the database'),
).action((o) =>
  admin(async () => {
    const result = o.file ? await auditVerifyFile(o.file) : await auditVerify(adminConfig(o));
    if (!result.ok) process.exitCode = 1;
    return result;
  }),
);
dataDirOption(
  audit
    .command('export')
    .description('write the events recorded before a date, with what proves their chain, to a gzipped NDJSON file')
    .requiredOption('--until <date>', 'export the events recorded before this date or date-time (UTC)')
    .requiredOption('--out <file>', 'the file to write (.ndjson.gz); never overwritten'),
).action((o) =>
  admin(async () => {
    return auditExport(adminConfig(o), o);
  }),
);
dataDirOption(
  audit
    .command('prune')
    .description(
      'delete the events recorded before a date once an export holds them; the rest verifies from a checkpoint',
    )
    .requiredOption('--until <date>', 'prune the events recorded before this date or date-time (UTC)')
    .option('--without-export', 'prune even what no export holds (the events are lost)'),
).action((o) =>
  admin(async () => {
    return auditPrune(adminConfig(o), o);
  }),
);

dataDirOption(
  program
    .command('reindex')
    .description('rebuild the search index of every vault (or one) from the current search parameter definitions')
    .option('--partition <name>', 'only this vault'),
).action((o) =>
  admin(async () => {
    const { reindex } = await import('./fhir/search/reindex.ts');
    return withStore(adminConfig(o), async (s) => {
      if (o.partition && !(await s.partitions.get(o.partition))) throw new ConfigError(`no vault ${o.partition}`);
      return reindex(s, { partition: o.partition });
    });
  }),
);

const db = program.command('db').description('the PostgreSQL schema (CAREVAULT_DATABASE_URL)');
db.command('migrate')
  .description('apply pending schema migrations (serve does this at start, under a lock)')
  .action(() => admin(() => dbMigrate(adminConfig({}))));
db.command('status')
  .description('show applied and pending schema migrations, changing nothing')
  .action(() => admin(() => dbStatus(adminConfig({}))));

dataDirOption(
  program
    .command('import <files...>')
    .description('load FHIR Bundles (batch or transaction, e.g. Synthea) and NDJSON files into a vault')
    .requiredOption('--partition <name>', 'the vault to load into'),
).action((files: string[], o) => admin(() => importCommand(adminConfig(o), files, o.partition)));

viewerCommands(program, admin, dataDirOption);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  fail(err);
}
