import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { DEFAULT_MAX_BYTES_PER_SOURCE, DEFAULT_MAX_RESOURCES_PER_SOURCE, type Professional } from '@carevault/sdk';
import type { Command } from 'commander';
import type { Admin, WithDataDir } from '../admin/command-types.ts';
import { adminAudit } from '../admin/operator.ts';
import { withStore } from '../admin/vault.ts';
import { adminConfig, type ConfigInput, MAX_RESOURCES_PER_SOURCE, MAX_SOURCE_KB } from '../config/index.ts';
import { addIdp, loadIdps } from '../saml/idps.ts';
import { samlEndpoint } from '../saml/validate.ts';
import { viewerConsentAdd, viewerInit, viewerSourceAdd, viewerSourceList } from './admin.ts';
import { ViewerRuntime } from './runtime.ts';
import { requireSettings, ViewerInputError } from './settings.ts';
import { addApp } from './smart-apps.ts';

interface UserFlags {
  userId: string;
  userRole: string;
  userOrg: string;
  userName?: string;
  userOrgName?: string;
}

const professionalOf = (o: UserFlags): Professional => ({
  id: o.userId,
  role: o.userRole,
  organizationOid: o.userOrg,
  name: o.userName,
  organizationName: o.userOrgName,
});

/** The per-source budget: `abc` or `-5` were taken as the default or as a budget already spent. */
function timeoutOf(value: string): number {
  const ms = Number(value);
  if (!/^\d+$/.test(value) || ms < 100 || ms > 600_000) {
    throw new ViewerInputError(`--timeout must be milliseconds between 100 and 600000, got "${value}"`);
  }
  return ms;
}

/** A positive whole number up to `max` (`--max-resources`, `--max-source-kb`). */
function countOf(flag: string, value: string, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > max) {
    throw new ViewerInputError(`${flag} must be a whole number between 1 and ${max}, got "${value}"`);
  }
  return n;
}

function userOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--user-id <id>', 'the professional (UZI/AGB/BIG number or user id)')
    .requiredOption('--user-role <code>', 'SNOMED CT role code, e.g. 62247001 (huisarts)')
    .requiredOption('--user-org <oid>', "OID of the professional's organization")
    .option('--user-name <name>', "the professional's name")
    .option('--user-org-name <name>', "the organization's name");
}

/** Runs `fn` with the viewer of this data dir; its audit events go into this platform's trail. */
async function withViewer<T>(o: ConfigInput, fn: (viewer: ViewerRuntime) => Promise<T>): Promise<T> {
  const config = adminConfig(o);
  return withStore(config, async (store) => {
    const viewer = await ViewerRuntime.open(config, adminAudit(store, config));
    try {
      return await fn(viewer);
    } finally {
      await viewer.close();
    }
  });
}

/** `carevault viewer …` (seed 001): set up the Zorgviewer's aggregator and ask it for a patient. */
export function viewerCommands(program: Command, admin: Admin, dataDir: WithDataDir): void {
  const viewer = program.command('viewer').description('the Zorgviewer aggregator (seed 001)');
  dataDir(
    viewer
      .command('init')
      .description('create the viewer key, JWKS, directory and consent vaults; prints {clientId, jwksUri, jwksFile, …}')
      .option('--org-oid <oid>', "the viewer operator's organization OID")
      .option('--org-name <name>', "the viewer operator's organization name")
      .option('--client-id <id>', 'client id of the viewer at this platform (default zorgviewer)')
      .option('--no-consent-check', 'ask every directory source without consulting the consent registry (seq-2a)'),
  ).action((o) => admin(() => viewerInit(adminConfig(o), { ...o, consentCheck: o.consentCheck })));

  const source = viewer.command('source').description('source systems in the address directory');
  dataDir(
    source
      .command('add')
      .description('add (or update) a source: an Organization with its Endpoint in the directory')
      .requiredOption('--name <name>', 'care provider name, shown as the source')
      .requiredOption('--org-oid <oid>', "the provider's organization OID (meta.source of its resources)")
      .requiredOption('--fhir-base <url>', "the source's FHIR base URL")
      .requiredOption('--client-id <id>', 'the client id the source knows this viewer by')
      .option('--ca <pem>', "trust anchor for the source's TLS certificate")
      .option('--style <style>', 'generic (X-ZV-* headers) or epic (also AORTA-ID)', 'generic'),
  ).action((o) => admin(() => viewerSourceAdd(adminConfig(o), o)));
  dataDir(source.command('list').description('list the directory sources')).action((o) =>
    admin(() => viewerSourceList(adminConfig(o))),
  );

  const idp = viewer.command('idp').description('SAML identity providers that may launch the viewer');
  dataDir(
    idp
      .command('add')
      .description('register (or replace) an IdP; prints the ACS URL and the viewer entity id to give it')
      .requiredOption('--name <name>', 'shown in the audit trail, e.g. VIPLive')
      .requiredOption('--profile <profile>', 'attribute mapping: zorgplatform or viplive')
      .requiredOption('--entity-id <issuer>', "the IdP's Issuer")
      .requiredOption('--cert <pem>', "the IdP's signing certificate")
      .option('--task-fhir-base <url>', 'zorgplatform: FHIR base holding the workflow Tasks')
      .option('--task-client-id <id>', 'zorgplatform: the client id the viewer has there')
      .option('--task-ca <pem>', "zorgplatform: trust anchor for that FHIR base's TLS certificate"),
  ).action((o) =>
    admin(async () => {
      const config = adminConfig(o);
      requireSettings(config.dataDir);
      const added = addIdp(config.dataDir, o);
      return { name: added.name, profile: added.profile, idpEntityId: added.entityId, ...samlEndpoint(config.baseUrl) };
    }),
  );
  dataDir(idp.command('list').description('list the registered IdPs')).action((o) =>
    admin(async () =>
      loadIdps(adminConfig(o).dataDir).map((i) => ({
        name: i.name,
        profile: i.profile,
        entityId: i.entityId,
        taskFhirBase: i.taskFhirBase,
        taskClientId: i.taskClientId,
      })),
    ),
  );

  const app = viewer.command('app').description('the viewer as a SMART app of an EHR (launch at /viewer/launch)');
  dataDir(
    app
      .command('add')
      .description("register the viewer's client at an EHR, for the EHR launch at /viewer/launch")
      .requiredOption('--ehr <issuer>', "the EHR's FHIR base, as it sends it in iss")
      .requiredOption('--client-id <id>', 'the client id the EHR gave the viewer')
      .option('--client-secret <secret>', 'client_secret_basic (otherwise private_key_jwt with the viewer key)')
      .option(
        '--jwks [file]',
        "private_key_jwt with the viewer's key (the default; its JWKS is viewer init's jwksFile)",
      )
      .option('--ca <pem>', "trust anchor for the EHR's TLS certificate"),
  ).action((o) =>
    admin(async () => {
      const config = adminConfig(o);
      requireSettings(config.dataDir);
      return {
        ...addApp(config.dataDir, o),
        launchUrl: `${config.baseUrl}/viewer/launch`,
        redirectUri: `${config.baseUrl}/viewer/launch/callback`,
      };
    }),
  );

  const consent = viewer.command('consent').description('the consent registry (ToestemmingConsent)');
  dataDir(
    consent
      .command('add')
      .description("record a patient's consent (or refusal) for sharing by one organization")
      .requiredOption('--bsn <bsn>', "the patient's BSN")
      .requiredOption('--org-oid <oid>', 'the organization the consent is about')
      .option('--status <status>', 'active or rejected', 'active')
      .option('--start <date>', 'first day (YYYY-MM-DD)')
      .option('--end <date>', 'last day (YYYY-MM-DD)'),
  ).action((o) => admin(() => viewerConsentAdd(adminConfig(o), o)));

  dataDir(
    userOptions(
      viewer
        .command('query')
        .description("one patient's record from every permitted source, tagged by source (needs the platform running)")
        .requiredOption('--bsn <bsn>', "the patient's BSN")
        .option(
          '--timeout <ms>',
          'per-source time budget in milliseconds (default CAREVAULT_VIEWER_SOURCE_TIMEOUT, 10 s)',
        )
        .option(
          '--max-resources <n>',
          `resources kept per source; past it the source is cut off (default CAREVAULT_VIEWER_MAX_RESOURCES, ${DEFAULT_MAX_RESOURCES_PER_SOURCE})`,
        )
        .option(
          '--max-source-kb <n>',
          `what one source's answers may hold together, in KiB (default CAREVAULT_VIEWER_MAX_SOURCE_KB, ${DEFAULT_MAX_BYTES_PER_SOURCE / 1024})`,
        ),
    ),
  ).action((o) =>
    admin(() =>
      withViewer(o, (v) =>
        v.query(o.bsn, professionalOf(o), {
          timeoutMs: o.timeout === undefined ? undefined : timeoutOf(o.timeout),
          maxResourcesPerSource:
            o.maxResources === undefined
              ? undefined
              : countOf('--max-resources', o.maxResources, MAX_RESOURCES_PER_SOURCE),
          maxBytesPerSource:
            o.maxSourceKb === undefined ? undefined : countOf('--max-source-kb', o.maxSourceKb, MAX_SOURCE_KB) * 1024,
        }),
      ),
    ),
  );

  dataDir(
    userOptions(
      viewer
        .command('document')
        .description("fetch a document's content (Binary) from the source that listed it")
        .requiredOption('--bsn <bsn>', "the patient's BSN")
        .requiredOption('--source <oid>', "the source's organization OID")
        .requiredOption('--url <url>', 'the attachment URL, e.g. Binary/123')
        .requiredOption('--out <file>', 'where to write the content')
        .option('--accept <type>', 'media type to ask for', 'application/pdf'),
    ),
  ).action((o) =>
    admin(() =>
      withViewer(o, async (v) => {
        const doc = await v.document({
          bsn: o.bsn,
          sourceOid: o.source,
          url: o.url,
          accept: o.accept,
          professional: professionalOf(o),
        });
        writeFileSync(o.out, doc.data);
        const sha256 = createHash('sha256').update(doc.data).digest('hex');
        return { out: o.out, contentType: doc.contentType, bytes: doc.data.length, sha256 };
      }),
    ),
  );
}
