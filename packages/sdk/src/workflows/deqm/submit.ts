import { FhirResponseError } from '../../errors.js';
import type { FhirClient, FhirResponse } from '../../fhir-client.js';
import type { Bundle, Resource } from '../../fhir-types.js';
import { pollStatus } from '../async-status.js';
import { type DataRequirement, MeasureDataError, queriesFromRequirements } from './requirements.js';

export interface SubmitMeasureDataOptions {
  /** The receiving server (DEQM): asked for the data requirements, given the data. */
  receiving: FhirClient;
  /** The EHR holding the patients' records (any FHIR R4 server). */
  ehr: FhirClient;
  /** The Measure: its id at the receiving server, or its canonical URL (`url` or `url|version`). */
  measure: string;
  periodStart: string;
  periodEnd: string;
  /** Patient ids at the EHR. */
  patients: string[];
  /** The submitting Organization as the receiving server knows it, e.g. `Organization/umcg`. */
  reporter: string;
  /** Who submits, for the Provenance (default: the reporter). */
  author?: { reference?: string; identifier?: { system: string; value: string }; display?: string };
  /**
   * `Prefer: respond-async` (async.html): `'auto'` (default) sends a patient's submission synchronously and again
   * asynchronously when the server refuses it as too large (413); `true` always, `false` never.
   */
  async?: boolean | 'auto';
  /** How long to wait for one asynchronous submission (default one hour); polls as the server asks. */
  asyncTimeoutMs?: number;
}

export interface SubmittedPatient {
  patient: string;
  /** Resources sent (the MeasureReport and the patient's data). */
  sent: number;
  measureReport: string | undefined;
  provenance: string | undefined;
}

export interface SubmitMeasureDataResult {
  measure: string;
  /** Resources the receiving server stored over all patients. */
  submitted: number;
  measureReport: string[];
  provenance: string[];
  patients: SubmittedPatient[];
}

const DATE_RE = /^\d{4}-\d{2}-\d{2}$/;

/**
 * One patient's `$submit-data`: synchronously, or (see `async`) with `Prefer: respond-async` and its status URL
 * polled until the outcome — which is what the synchronous call would have answered. A 413 means nothing was
 * stored, so sending the same submission again asynchronously cannot store it twice.
 */
async function submitOne(
  o: SubmitMeasureDataOptions,
  path: string,
  parameters: unknown,
  headers: Record<string, string>,
): Promise<FhirResponse<Bundle>> {
  const mode = o.async ?? 'auto';
  if (mode !== true) {
    try {
      return await o.receiving.request<Bundle>('POST', path, parameters, { headers });
    } catch (err) {
      if (mode === false || !(err instanceof FhirResponseError && err.status === 413)) throw err;
    }
  }
  const accepted = await o.receiving.request<Bundle>('POST', path, parameters, {
    headers: { ...headers, prefer: 'respond-async' },
  });
  // A server without the asynchronous pattern answers as it would have anyway.
  if (accepted.status !== 202) return accepted;
  const statusUrl = accepted.headers.get('content-location');
  if (!statusUrl) throw new MeasureDataError('the asynchronous submission was accepted without a Content-Location');
  return pollStatus<Bundle>(o.receiving, statusUrl, {
    timeoutMs: o.asyncTimeoutMs ?? 3_600_000,
    pollIntervalMs: 1000,
    onTimeout: (url) => new MeasureDataError(`the submission did not finish in time; its status is at ${url}`),
  });
}

/** Measure id and canonical at the receiving server. */
async function resolveMeasure(receiving: FhirClient, measure: string): Promise<{ id: string; canonical: string }> {
  let m: Resource | undefined;
  if (/^[a-z][a-z0-9+.-]*:/i.test(measure)) {
    const [url, version] = measure.split('|') as [string, string | undefined];
    const found = await receiving.search('Measure', { url, ...(version ? { version } : {}) });
    m = found.entry?.find((e) => e.resource?.resourceType === 'Measure')?.resource;
    if (!m) throw new MeasureDataError(`the receiving server has no Measure ${measure}`);
  } else {
    m = await receiving.read('Measure', measure);
  }
  const url = typeof m.url === 'string' ? m.url : undefined;
  const version = typeof m.version === 'string' ? m.version : undefined;
  return { id: m.id as string, canonical: url ? `${url}${version ? `|${version}` : ''}` : `Measure/${m.id}` };
}

/**
 * DEQM "submit data" from the client's side (seed 002): asks the receiving server for the measure's data
 * requirements, queries the EHR for exactly that data per patient, and submits each patient's data-collection
 * MeasureReport with its resources through `$submit-data`, with an `X-Provenance` (no target: the server sets
 * it). Patients are submitted one by one, each as one transaction at the receiving server.
 */
export async function submitMeasureData(o: SubmitMeasureDataOptions): Promise<SubmitMeasureDataResult> {
  for (const [name, v] of [
    ['periodStart', o.periodStart],
    ['periodEnd', o.periodEnd],
  ] as const) {
    if (!DATE_RE.test(v) || Number.isNaN(Date.parse(v)))
      throw new MeasureDataError(`${name} must be a date YYYY-MM-DD`);
  }
  if (o.periodEnd < o.periodStart) throw new MeasureDataError('periodEnd is before periodStart');
  if (o.patients.length === 0) throw new MeasureDataError('name at least one patient');
  if (!/^Organization\/[A-Za-z0-9\-.]{1,64}$/.test(o.reporter)) {
    throw new MeasureDataError('reporter must be a reference Organization/<id>');
  }
  const period = { start: o.periodStart, end: o.periodEnd };
  const measure = await resolveMeasure(o.receiving, o.measure);
  const library = await o.receiving.body<{ dataRequirement?: DataRequirement[] }>(
    'GET',
    `Measure/${encodeURIComponent(measure.id)}/$data-requirements?periodStart=${period.start}&periodEnd=${period.end}`,
  );
  const queries = await queriesFromRequirements(library.dataRequirement ?? [], o.receiving, period);
  const result: SubmitMeasureDataResult = {
    measure: measure.canonical,
    submitted: 0,
    measureReport: [],
    provenance: [],
    patients: [],
  };
  for (const patient of o.patients) {
    const records = new Map<string, Resource>();
    const p = await o.ehr.read('Patient', patient);
    records.set(`Patient/${p.id}`, p);
    for (const q of queries) {
      for await (const r of o.ehr.searchAll(q.type, [['patient', patient], ...q.params])) {
        if (r.id) records.set(`${r.resourceType}/${r.id}`, r);
      }
    }
    const report: Resource = {
      resourceType: 'MeasureReport',
      status: 'complete',
      type: 'data-collection',
      measure: measure.canonical,
      subject: { reference: `Patient/${patient}` },
      date: new Date().toISOString(),
      period,
      reporter: { reference: o.reporter },
      evaluatedResource: [...records.keys()].map((reference) => ({ reference })),
    };
    const provenance = {
      resourceType: 'Provenance',
      recorded: new Date().toISOString(),
      activity: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-DataOperation', code: 'CREATE' }] },
      reason: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'HQUALIMP' }] }],
      agent: [
        {
          type: {
            coding: [{ system: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type', code: 'author' }],
          },
          who: o.author ?? { reference: o.reporter },
          onBehalfOf: { reference: o.reporter },
        },
      ],
    };
    const parameters = {
      resourceType: 'Parameters',
      parameter: [
        { name: 'measureReport', resource: report },
        ...[...records.values()].map((resource) => ({ name: 'resource', resource })),
      ],
    };
    const headers = {
      'x-provenance': JSON.stringify(provenance).replace(
        /[\u007f-\uffff]/g,
        (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
      ),
    };
    const res = await submitOne(o, `Measure/${encodeURIComponent(measure.id)}/$submit-data`, parameters, headers);
    const locations = (res.body.entry ?? []).flatMap((e) => (e.response?.location ? [e.response.location] : []));
    const reportRef = locations.find((l) => l.startsWith('MeasureReport/') || l.includes('/MeasureReport/'));
    const stored = res.headers.get('x-provenance');
    const provenanceRef = stored ? `Provenance/${(JSON.parse(stored) as { id?: string }).id}` : undefined;
    result.submitted += locations.length;
    if (reportRef) result.measureReport.push(reportRef.replace(/^.*\/(MeasureReport\/)/, '$1'));
    if (provenanceRef) result.provenance.push(provenanceRef);
    result.patients.push({ patient, sent: 1 + records.size, measureReport: reportRef, provenance: provenanceRef });
  }
  return result;
}
