import { ByteBudget } from '../../body-limit.js';
import { CarevaultError, FhirResponseError, OAuthError, ResponseTooLargeError } from '../../errors.js';
import type { FhirClient } from '../../fhir-client.js';
import type { Resource } from '../../fhir-types.js';
import { newId } from '../../ids.js';
import { type BgzQuery, bgzFromPlanDefinition, DEFAULT_BGZ } from './bgz.js';
import { BSN_SYSTEM, INVALID_BSN_WARNING, isValidBsn } from './bsn.js';
import type { SourceConnector } from './connector.js';
import { consentedOrganizations, directorySources, type SourceSystem } from './directory.js';
import { checkProfessional, type Professional } from './user-context.js';

export type SourceState = 'ok' | 'no-consent' | 'no-patient' | 'multiple-patients' | 'error';

export interface SourceResult {
  name: string;
  /** `urn:oid:` of the source's organization, as `meta.source` of its resources. */
  organization: string;
  status: SourceState;
  /** HTTP status of the failing request (status `error`). */
  http?: number | undefined;
  error?: string | undefined;
  /** The seed's warning text (multiple patients), or that the source had more than the viewer takes. */
  warning?: string | undefined;
  count: number;
  /** The source had more than `maxResourcesPerSource` or `maxBytesPerSource`: `count` is what was kept. */
  truncated?: boolean | undefined;
}

/** What the viewer records per source query (NEN 7513: who looked at whom, where, with which request). */
export interface SourceQueryRecord {
  source: SourceSystem;
  result: SourceResult;
  professional: Professional;
  bsn: string;
  correlationId: string;
  requestIds: string[];
}

export interface AggregateOptions {
  bsn: string;
  professional: Professional;
  /** The address directory (Organization + Endpoint) and, there, the PlanDefinition BgZ2017. */
  directory: FhirClient;
  /** The consent registry; omitted in regions without consent check (seq-2a). */
  consent?: FhirClient | undefined;
  connector: SourceConnector;
  /** Per-source budget for the whole patient query. Default 10 s. */
  timeoutMs?: number;
  /** The most resources kept from one source; past it the source's searches stop. Default 10,000. */
  maxResourcesPerSource?: number | undefined;
  /** The most bytes all of one source's answers may hold together; past it likewise. Default 64 MiB. */
  maxBytesPerSource?: number | undefined;
  correlationId?: string;
  /** YYYY-MM-DD for consent periods; default today (UTC). */
  today?: string;
  /** Only these sources (organization OIDs), e.g. one per request so a page shows each source as it answers. */
  only?: string[] | undefined;
  /** Awaited per queried source before the result is returned (the viewer's audit trail). */
  onSourceQueried?: (record: SourceQueryRecord) => Promise<void>;
}

export interface AggregateResult {
  correlationId: string;
  patient?: { bsn: string; name?: string | undefined; birthDate?: string | undefined; gender?: string | undefined };
  sources: SourceResult[];
  /** Every resource of every answering source, each tagged with `meta.source` = the source's OID URI. */
  resources: Resource[];
  warnings: string[];
}

export class InvalidBsnError extends CarevaultError {
  constructor() {
    super(INVALID_BSN_WARNING);
  }
}

const MULTIPLE = (name: string) => `Bron '${name}' bevat meerdere patiënten met dit BSN nummer.`;
const TRUNCATED = (name: string) =>
  `Bron '${name}' heeft meer gegevens dan de viewer van één bron toont; niet alles wordt getoond.`;

export const DEFAULT_MAX_RESOURCES_PER_SOURCE = 10_000;
export const DEFAULT_MAX_BYTES_PER_SOURCE = 64 * 1024 * 1024;

/**
 * One patient's record from every care provider that may share it (seed 001, seq-2/2a/3): the directory names
 * the sources, the consent registry says which may be asked, and every permitted source is queried in parallel
 * within its own time budget — a source that fails or is slow ends up as `error` and never holds up the rest.
 */
export async function aggregatePatient(o: AggregateOptions): Promise<AggregateResult> {
  if (!isValidBsn(o.bsn)) throw new InvalidBsnError();
  const professional = checkProfessional(o.professional);
  const correlationId = o.correlationId ?? newId();
  const today = o.today ?? new Date().toISOString().slice(0, 10);
  const wanted = o.only?.map((oid) => oid.replace(/^urn:oid:/, ''));
  const [sources, consented, queries] = await Promise.all([
    directorySources(o.directory).then((all) => (wanted ? all.filter((s) => wanted.includes(s.organizationOid)) : all)),
    o.consent ? consentedOrganizations(o.consent, o.bsn, today) : undefined,
    bgzQueries(o.directory),
  ]);
  const timeoutMs = o.timeoutMs ?? 10_000;
  const maxResources = o.maxResourcesPerSource ?? DEFAULT_MAX_RESOURCES_PER_SOURCE;
  const maxBytes = o.maxBytesPerSource ?? DEFAULT_MAX_BYTES_PER_SOURCE;
  const outcomes = await Promise.all(
    sources.map(async (source) => {
      const organization = `urn:oid:${source.organizationOid}`;
      if (consented && !consented.has(source.organizationOid)) {
        return { result: { name: source.name, organization, status: 'no-consent' as const, count: 0 }, resources: [] };
      }
      const call = o.connector.open(source, professional, correlationId, timeoutMs, new ByteBudget(maxBytes));
      const base = { name: source.name, organization };
      const outcome = await withBudget(timeoutMs, base, (signal) =>
        querySource(call.client, source, o.bsn, queries, maxResources, signal),
      );
      const result = outcome.result;
      await o.onSourceQueried?.({
        source,
        result,
        professional,
        bsn: o.bsn,
        correlationId,
        requestIds: call.requestIds,
      });
      return outcome;
    }),
  );
  const resources = outcomes.flatMap((x) => x.resources);
  const patients = resources.filter((r) => r.resourceType === 'Patient') as PatientLike[];
  const warnings = outcomes.flatMap((x) => (x.result.warning ? [x.result.warning] : []));
  return {
    correlationId,
    ...(patients[0] ? { patient: summary(o.bsn, patients[0]) } : {}),
    sources: outcomes.map((x) => x.result),
    resources,
    warnings,
  };
}

interface Outcome {
  result: SourceResult;
  resources: Resource[];
}

async function querySource(
  client: FhirClient,
  source: SourceSystem,
  bsn: string,
  queries: BgzQuery[],
  maxResources: number,
  signal: AbortSignal,
): Promise<Outcome> {
  const organization = `urn:oid:${source.organizationOid}`;
  const base = { name: source.name, organization };
  const found = await client.search('Patient', { identifier: `${BSN_SYSTEM}|${bsn}` }, { signal });
  const patients = (found.entry ?? []).flatMap((e) =>
    e.resource?.resourceType === 'Patient' && e.search?.mode !== 'include' ? [e.resource] : [],
  );
  if (patients.length === 0) return { result: { ...base, status: 'no-patient', count: 0 }, resources: [] };
  if (patients.length > 1) {
    // After an emergency admission one BSN can name two records; merging them could mix two people.
    const warning = MULTIPLE(source.name);
    return { result: { ...base, status: 'multiple-patients', count: 0, warning }, resources: [] };
  }
  const patient = patients[0] as Resource;
  // A source that keeps sending (page after page, or pages of large resources) is cut off at the per-source
  // limits, and the viewer shows what arrived with a warning: a source's whole record must not fill the viewer.
  const enough = new AbortController();
  const both = AbortSignal.any([signal, enough.signal]);
  let kept = 1;
  let truncated = false;
  const stop = () => {
    truncated = true;
    enough.abort(new Error('source limit reached'));
  };
  const pages = await Promise.all(
    queries.map(async (q) => {
      const out: Resource[] = [];
      const params: [string, string][] = [['patient', `Patient/${patient.id}`], ...q.params];
      try {
        for await (const r of client.searchAll(q.type, params, { signal: both })) {
          if (kept >= maxResources) {
            stop();
            return out;
          }
          out.push(r);
          kept++;
        }
      } catch (err) {
        if (err instanceof ResponseTooLargeError) stop();
        else if (!(enough.signal.aborted && !signal.aborted)) throw err;
      }
      return out;
    }),
  );
  const seen = new Set<string>([`Patient/${patient.id}`]);
  const resources: Resource[] = [patient];
  for (const r of pages.flat()) {
    const k = `${r.resourceType}/${r.id}`;
    if (seen.has(k)) continue;
    seen.add(k);
    resources.push(r);
  }
  for (const r of resources) tag(r, organization);
  const result: SourceResult = { ...base, status: 'ok', count: resources.length };
  return { result: truncated ? { ...result, truncated, warning: TRUNCATED(source.name) } : result, resources };
}

/** seq-3 gateways: every resource says which organization's source it came from. */
function tag(r: Resource, organization: string): void {
  const tagged = r as { meta?: Record<string, unknown> };
  tagged.meta = { ...tagged.meta, source: organization };
}

/** Runs `fn` with an abort signal that fires after `ms`; whatever happens, the answer is an Outcome in time. */
async function withBudget(
  ms: number,
  source: { name: string; organization: string },
  fn: (signal: AbortSignal) => Promise<Outcome>,
): Promise<Outcome> {
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      controller.abort(new Error('timeout'));
      reject(new BudgetExceeded());
    }, ms);
  });
  try {
    return await Promise.race([fn(controller.signal), timeout]);
  } catch (err) {
    return { result: failure(err, source), resources: [] };
  } finally {
    clearTimeout(timer);
    // One failed search fails the source: its sibling searches are not left running.
    controller.abort(new Error('source query ended'));
  }
}

class BudgetExceeded extends Error {}

function failure(err: unknown, source: { name: string; organization: string }): SourceResult {
  const base = { ...source, status: 'error' as const, count: 0 };
  if (err instanceof BudgetExceeded) return { ...base, error: 'timeout' };
  if (err instanceof FhirResponseError) return { ...base, http: err.status, error: err.message };
  if (err instanceof OAuthError) return { ...base, http: err.status, error: `token: ${err.message}` };
  return { ...base, error: (err as Error)?.message ?? String(err) };
}

async function bgzQueries(directory: FhirClient): Promise<BgzQuery[]> {
  const plans = await directory.search('PlanDefinition', { name: 'BgZ2017', status: 'active' });
  const plan = plans.entry?.find((e) => e.resource?.resourceType === 'PlanDefinition')?.resource;
  const fromPlan = plan ? bgzFromPlanDefinition(plan) : [];
  return fromPlan.length ? fromPlan : DEFAULT_BGZ;
}

interface PatientLike extends Resource {
  name?: { text?: string; family?: string; given?: string[] }[];
  birthDate?: string;
  gender?: string;
}

function summary(bsn: string, p: PatientLike): NonNullable<AggregateResult['patient']> {
  const n = p.name?.[0];
  const name = n?.text ?? ([...(n?.given ?? []), n?.family].filter(Boolean).join(' ') || undefined);
  return { bsn, name, birthDate: p.birthDate, gender: p.gender };
}

/**
 * seq-4: a document's content (`DocumentReference.content.attachment.url`, usually `Binary/<id>`) from the source
 * that listed it, asked for in its own format with an explicit `Accept` (a PDF/A arrives as the PDF bytes).
 * Only URLs under the source's FHIR base are followed, so the source's token never goes anywhere else.
 */
export async function fetchDocument(o: {
  connector: SourceConnector;
  source: SourceSystem;
  professional: Professional;
  url: string;
  accept?: string;
  correlationId?: string;
  timeoutMs?: number;
}): Promise<{ contentType: string | undefined; data: Uint8Array; requestIds: string[] }> {
  const base = `${o.source.fhirBase.replace(/\/$/, '')}/`;
  const target = new URL(o.url, base);
  if (!target.href.startsWith(base)) throw new DocumentUrlError(o.url, o.source.fhirBase);
  const accept = o.accept || 'application/pdf';
  if (!MEDIA_RANGES.test(accept)) throw new DocumentAcceptError(accept);
  const timeoutMs = o.timeoutMs ?? 30_000;
  const call = o.connector.open(o.source, checkProfessional(o.professional), o.correlationId ?? newId(), timeoutMs);
  const res = await call.client.binary(target.href, accept);
  return { contentType: res.headers.get('content-type') ?? undefined, data: res.body, requestIds: call.requestIds };
}

/** One or more media ranges (RFC 9110 §12.5.1): a line break would fail the header, and be retried, at fetch. */
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const RANGE = `${TOKEN}/${TOKEN}(\\s*;\\s*${TOKEN}=(${TOKEN}|"[^"\\x00-\\x1f\\x7f]*"))*`;
const MEDIA_RANGES = new RegExp(`^(?=.{1,500}$)${RANGE}(\\s*,\\s*${RANGE})*$`);

export class DocumentAcceptError extends CarevaultError {
  constructor(accept: string) {
    super(`${JSON.stringify(accept.slice(0, 80))} is not a media type to ask a source for (e.g. application/pdf)`);
  }
}

export class DocumentUrlError extends CarevaultError {
  constructor(url: string, base: string) {
    super(`document URL "${url}" is not under the source's FHIR base ${base}`);
  }
}
