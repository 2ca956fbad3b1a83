import { inPatientCompartment } from '../../vault/compartment.ts';
import { FhirError } from '../errors.ts';
import { ID_RE, RESOURCE_TYPES } from '../resource-types.ts';

/** What an $export kick-off asked for (Bulk Data Access IG 2.0, export.html#query-parameters). */
export interface ExportRequest {
  level: 'system' | 'patient' | 'group';
  group?: string | undefined;
  /** The types asked for; none means every type the client may read (at patient level: the compartment's). */
  types: string[];
  since?: string | undefined;
  /** `_typeFilter`: per type, searches whose matches are OR-ed. */
  typeFilters: Record<string, string[]>;
  /** `patient` (POST): the patients whose compartments are exported, as ids. */
  patients?: string[] | undefined;
  /** `_elements`: top-level elements for every type (`id`) or for one (`Patient.name`). */
  elements?: string[] | undefined;
  /** Parameters ignored under `Prefer: handling=lenient`, named in the export's error file. */
  ignored?: string[] | undefined;
}

/** The elements `_elements` keeps of `type`, or undefined when it names none of that type: the whole resource. */
export function elementsFor(request: ExportRequest, type: string): string[] | undefined {
  const own = (request.elements ?? []).flatMap((e) => {
    const dot = e.indexOf('.');
    if (dot < 0) return [e];
    return e.slice(0, dot) === type ? [e.slice(dot + 1)] : [];
  });
  return own.length > 0 ? own : undefined;
}

const OUTPUT_FORMATS = new Set(['application/fhir+ndjson', 'application/ndjson', 'ndjson']);
const INSTANT_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
/** Parameters the IG defines that this server does not implement: refused, or ignored under handling=lenient. */
const UNSUPPORTED = new Set(['includeAssociatedData', '_until', 'organizeOutputBy', 'allowPartialManifests']);

const ELEMENT_RE = /^(?:([A-Z][A-Za-z]+)\.)?[a-z][A-Za-z0-9]*$/;
const MAX_ELEMENTS = 500;
/** How far ahead of this server's clock `_since` may be (clock skew); beyond it, the client asks for the future. */
const SKEW_MS = 5 * 60_000;

const bad = (message: string) => new FhirError(400, 'invalid', message);

/**
 * Reads the kick-off's parameters (query string, or a Parameters body for POST). An unknown or unsupported
 * parameter is refused unless the client sent `Prefer: handling=lenient` (export.html#query-parameters).
 */
export function parseExportRequest(
  level: ExportRequest['level'],
  group: string | undefined,
  params: URLSearchParams,
  lenient: boolean,
): ExportRequest {
  const request: ExportRequest = { level, group, types: [], typeFilters: {} };
  // Each filter is a search the job runs for every chunk of patients: their number is bounded like a search's.
  if ([...params.keys()].length > 200) throw bad('at most 200 $export parameters');
  for (const [name, value] of params) {
    switch (name) {
      case '_outputFormat':
        if (!OUTPUT_FORMATS.has(value)) throw bad(`_outputFormat ${value} is not supported (application/fhir+ndjson)`);
        break;
      case '_since':
        if (!INSTANT_RE.test(value) || Number.isNaN(Date.parse(value)))
          throw bad(`_since must be an instant such as 2024-01-01T00:00:00Z, not "${value}"`);
        if (Date.parse(value) > Date.now() + SKEW_MS) throw bad(`_since ${value} is in the future`);
        request.since = new Date(value).toISOString();
        break;
      case '_elements': {
        const names = value.split(',').map((e) => e.trim());
        // Every exported resource is cut to them, one name at a time.
        if ((request.elements?.length ?? 0) + names.length > MAX_ELEMENTS)
          throw bad(`_elements takes at most ${MAX_ELEMENTS} names`);
        for (const element of names) {
          const type = ELEMENT_RE.exec(element)?.[1];
          if (!ELEMENT_RE.test(element) || (type !== undefined && !RESOURCE_TYPES.has(type)))
            throw bad(`_elements takes top-level elements such as id or Patient.name, not "${element}"`);
        }
        request.elements = [...(request.elements ?? []), ...names];
        break;
      }
      case '_type':
        for (const type of value.split(',').map((t) => t.trim())) {
          if (!RESOURCE_TYPES.has(type)) throw bad(`_type: ${type} is not an R4 resource type`);
          if (level !== 'system' && !inPatientCompartment(type))
            throw bad(`_type: ${type} is not in the Patient compartment, which a ${level}-level export covers`);
          if (!request.types.includes(type)) request.types.push(type);
        }
        break;
      case '_typeFilter': {
        const type = value.split('?')[0] as string;
        if (!RESOURCE_TYPES.has(type) || !value.includes('?'))
          throw bad(`_typeFilter must be a search such as Observation?status=final, not "${value}"`);
        request.typeFilters[type] = [...(request.typeFilters[type] ?? []), value.slice(type.length + 1)];
        break;
      }
      case 'patient': {
        if (level === 'system') throw bad('patient is a parameter of Patient/$export and Group/[id]/$export');
        const id = value.replace(/^Patient\//, '');
        if (!ID_RE.test(id)) throw bad(`patient: "${value}" is not a Patient reference`);
        request.patients = [...(request.patients ?? []), id];
        break;
      }
      default:
        if (!lenient) {
          throw new FhirError(
            400,
            'not-supported',
            UNSUPPORTED.has(name)
              ? `${name} is not supported by this server; send Prefer: handling=lenient to export without it`
              : `unknown $export parameter ${name}`,
          );
        }
        if (!request.ignored?.includes(name.slice(0, 64)))
          request.ignored = [...(request.ignored ?? []), name.slice(0, 64)];
    }
  }
  // A type filter narrows its type; a type it names that _type leaves out is not exported (export.html#_typefilter).
  for (const type of Object.keys(request.typeFilters)) {
    if (request.types.length > 0 && !request.types.includes(type))
      throw bad(`_typeFilter names ${type}, which _type does not ask for`);
  }
  return request;
}
