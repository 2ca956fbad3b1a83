/** Value conversions shared by index extraction and query parsing, so both sides agree exactly. */

/** Upper bound used for open-ended periods (ms since epoch; the largest valid JS date). */
export const FAR_FUTURE = 8_640_000_000_000_000;
export const FAR_PAST = -8_640_000_000_000_000;

/** Date.UTC reads the years 0–99 as 1900–1999; 400 years later, less a 400-year Gregorian cycle, is the year itself. */
const CYCLE_MS = 146_097 * 86_400_000;
function utc(year: number, month: number, day = 1, h = 0, mi = 0, s = 0, ms = 0): number {
  return year < 100
    ? Date.UTC(year + 400, month, day, h, mi, s, ms) - CYCLE_MS
    : Date.UTC(year, month, day, h, mi, s, ms);
}

const DATE_RE =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/**
 * A FHIR date, dateTime or instant as the half-open interval [lo, hi) in ms that its precision implies
 * (search.html#date: "2024" means all of 2024). Times without a zone are taken as UTC. Undefined if malformed.
 */
export function dateRange(value: string): [number, number] | undefined {
  const m = DATE_RE.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const year = Number(y);
  const month = mo ? Number(mo) - 1 : 0;
  const day = d ? Number(d) : 1;
  if (month > 11 || day < 1 || day > 31) return undefined;
  if (!mo) return [utc(year, 0), utc(year + 1, 0)];
  if (!d) return [utc(year, month), utc(year, month + 1)];
  if (h === undefined) {
    const lo = utc(year, month, day);
    if (new Date(lo).getUTCDate() !== day) return undefined;
    return [lo, lo + 86_400_000];
  }
  const offset =
    !tz || tz === 'Z' ? 0 : (tz[0] === '-' ? -1 : 1) * (Number(tz.slice(1, 3)) * 60 + Number(tz.slice(4, 6))) * 60_000;
  if (Number(h) > 23 || Number(mi) > 59 || (s !== undefined && Number(s) > 60)) return undefined;
  const ms = frac ? Number(frac.slice(0, 3).padEnd(3, '0')) : 0;
  const lo = utc(year, month, day, Number(h), Number(mi), s ? Number(s) : 0, ms) - offset;
  const width = frac ? (frac.length >= 3 ? 1 : 10 ** (3 - frac.length)) : s !== undefined ? 1000 : 60_000;
  return [lo, lo + width];
}

/** Case- and accent-insensitive form for string search (search.html#string). */
export function normalizeString(value: string): string {
  return value.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase();
}

/** Splits a relative reference "Type/id" (optionally with /_history/n). */
export function relativeReference(ref: string): { type: string; id: string } | undefined {
  const m = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(ref);
  return m ? { type: m[1] as string, id: m[2] as string } : undefined;
}

/** Escapes LIKE wildcards; the SQL uses ESCAPE '\\'. */
export function escapeLike(value: string): string {
  return value.replace(/[\\%_]/g, '\\$&');
}
