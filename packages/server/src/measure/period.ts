import { FhirError } from '../fhir/errors.ts';

const DATE_RE = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?$/;

export interface MeasurementPeriod {
  start: string;
  end: string;
}

/**
 * periodStart/periodEnd of a measure operation (dates or dateTimes); absent ones fall back to the Measure's
 * effectivePeriod, as the DEQM reference server does. An end before the start is refused, not swapped.
 */
/** The period parameters that were given are well-formed (checked before anything is read). */
export function checkPeriodSyntax(params: URLSearchParams): void {
  measurementPeriod(params, { start: '1900-01-01', end: '9999-12-31' }, false);
}

export function measurementPeriod(
  params: URLSearchParams,
  effective: { start?: string; end?: string } | undefined,
  ordered = true,
): MeasurementPeriod {
  const pick = (name: 'periodStart' | 'periodEnd', fallback: string | undefined) => {
    const given = params.getAll(name);
    if (given.length > 1) throw new FhirError(400, 'invalid', `${name} may be given once`);
    const v = given[0] ?? fallback;
    if (v === undefined) {
      throw new FhirError(400, 'required', `${name} is required (the Measure has no effectivePeriod to default to)`);
    }
    if (!DATE_RE.test(v) || Number.isNaN(Date.parse(v))) {
      throw new FhirError(400, 'invalid', `${name} must be a date (YYYY-MM-DD) or a dateTime`);
    }
    return v;
  };
  const start = pick('periodStart', effective?.start);
  const end = pick('periodEnd', effective?.end);
  if (ordered && Date.parse(end.slice(0, 10)) < Date.parse(start.slice(0, 10))) {
    throw new FhirError(400, 'invalid', `periodEnd (${end}) is before periodStart (${start})`);
  }
  return { start, end };
}
