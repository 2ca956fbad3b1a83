import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type AggregateOptions,
  type AggregateResult,
  aggregatePatient,
  checkProfessional,
  consentedOrganizations,
  directorySources,
  fetchDocument,
  InvalidBsnError,
  isValidBsn,
  newId,
  type Professional,
  SourceConnector,
  type SourceResult,
  type SourceSystem,
} from '@carevault/sdk';
import { type ClosableFetch, tlsFetch } from '@carevault/sdk/node';
import type { AuditTrail } from '../audit/trail.ts';
import type { Config } from '../config/index.ts';
import { sourceQueryEvent } from './audit.ts';
import { requireSettings, signingKey, ViewerInputError, type ViewerSettings } from './settings.ts';

export class NoConsentError extends Error {
  constructor(source: string) {
    super(`the patient has no active consent for sharing by ${source}`);
  }
}

/**
 * The aggregator as this platform runs it (CLI and /viewer/api/): its key signs every assertion and context, its
 * directory and consent registry are vaults of this platform, reached over FHIR like any external one, and every
 * source query is written to this platform's audit trail before the answer is returned.
 */
export class ViewerRuntime {
  private readonly fetches = new Map<string, ClosableFetch>();

  private constructor(
    readonly settings: ViewerSettings,
    private readonly connector: SourceConnector,
    private readonly directory: SourceSystem,
    private readonly consent: SourceSystem,
    private readonly audit: AuditTrail,
    private readonly limits: Config['viewerSources'],
  ) {}

  static async open(config: Config, audit: AuditTrail): Promise<ViewerRuntime> {
    const settings = requireSettings(config.dataDir);
    const key = await signingKey(config.dataDir);
    const caPath = join(config.dataDir, 'pki', 'ca.pem');
    const ownCa = existsSync(caPath) ? readFileSync(caPath, 'utf8') : undefined;
    const own = (partition: string, name: string): SourceSystem => ({
      name,
      organizationOid: settings.orgOid ?? '0',
      fhirBase: `${config.baseUrl}/fhir/${partition}`,
      clientId: settings.clientId,
      style: 'generic',
      ca: ownCa,
    });
    let runtime: ViewerRuntime | undefined;
    const connector = new SourceConnector({
      signer: { key, kid: settings.kid, alg: settings.alg },
      fetchFor: (source) => (runtime as ViewerRuntime).fetchFor(source),
    });
    runtime = new ViewerRuntime(
      settings,
      connector,
      own(settings.directory, 'directory'),
      own(settings.consent, 'consent'),
      audit,
      config.viewerSources,
    );
    return runtime;
  }

  /** A source's own trust anchor when it registered one, the system roots otherwise; connections are reused. */
  private fetchFor(source: SourceSystem): typeof fetch {
    if (!source.ca) return globalThis.fetch.bind(globalThis);
    let f = this.fetches.get(source.ca);
    if (!f) {
      f = tlsFetch({ ca: source.ca });
      this.fetches.set(source.ca, f);
    }
    return f;
  }

  /** A FHIR client at any base, as this viewer (its key, the professional's context and headers). */
  open(source: SourceSystem, professional: Professional, correlationId = newId()) {
    return this.connector.open(source, checkProfessional(professional), correlationId, 15_000).client;
  }

  /** The directory's sources (name and organization), so a page can ask each one on its own. */
  async sources(professional: Professional): Promise<{ name: string; organization: string }[]> {
    const all = await directorySources(this.open(this.directory, professional));
    return all.map((s) => ({ name: s.name, organization: `urn:oid:${s.organizationOid}` }));
  }

  async query(
    bsn: string,
    professional: Professional,
    o: Pick<AggregateOptions, 'timeoutMs' | 'only' | 'maxResourcesPerSource' | 'maxBytesPerSource'> = {},
  ): Promise<AggregateResult> {
    const correlationId = newId();
    const open = (s: SourceSystem) => this.connector.open(s, professional, correlationId, 15_000).client;
    return aggregatePatient({
      bsn,
      professional,
      correlationId,
      directory: open(this.directory),
      consent: this.settings.consentCheck ? open(this.consent) : undefined,
      connector: this.connector,
      ...this.limits,
      // A caller's own limits (the CLI's flags) win over the platform's; one it left out is not a limit.
      ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)),
      onSourceQueried: (record) => this.audit.record(sourceQueryEvent(record)),
    });
  }

  /**
   * seq-4: a document from the source (by organization OID) that listed it, in its native format. The consent
   * that allowed the listing must still hold, and the fetch is audited like a query.
   */
  async document(o: { bsn: string; sourceOid: string; url: string; accept?: string; professional: Professional }) {
    if (!isValidBsn(o.bsn)) throw new InvalidBsnError();
    const professional = checkProfessional(o.professional);
    const correlationId = newId();
    const open = (s: SourceSystem) => this.connector.open(s, professional, correlationId, 15_000).client;
    const oid = o.sourceOid.replace(/^urn:oid:/, '');
    const source = (await directorySources(open(this.directory))).find((s) => s.organizationOid === oid);
    if (!source) throw new ViewerInputError(`no source with organization ${oid} in the directory`);
    if (this.settings.consentCheck) {
      const today = new Date().toISOString().slice(0, 10);
      const consented = await consentedOrganizations(open(this.consent), o.bsn, today);
      if (!consented.has(oid)) throw new NoConsentError(source.name);
    }
    const record = (result: SourceResult, requestIds: string[]) =>
      this.audit.record(sourceQueryEvent({ source, result, professional, bsn: o.bsn, correlationId, requestIds }));
    const base = { name: source.name, organization: `urn:oid:${oid}` };
    try {
      const doc = await fetchDocument({
        connector: this.connector,
        source,
        professional,
        url: o.url,
        accept: o.accept,
        correlationId,
      });
      await record({ ...base, status: 'ok', count: 1 }, doc.requestIds);
      return doc;
    } catch (err) {
      const http = (err as { status?: number }).status;
      await record({ ...base, status: 'error', count: 0, http, error: (err as Error).message }, []);
      throw err;
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.fetches.values()].map((f) => f.close()));
    this.fetches.clear();
  }
}
