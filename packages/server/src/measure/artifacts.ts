import type { Bundle, Library, Measure, ValueSet } from 'fhir/r4.js';
import type { FhirContext } from '../fhir/context.ts';
import { FhirError } from '../fhir/errors.ts';
import { assertVisible, restrictionFilter } from '../fhir/search/restrictions.ts';
import type { SearchFilter } from '../store/types.ts';
import { decide } from '../vault/policy.ts';
import { checkPopulations } from './elm-check.ts';

const ELM_JSON = 'application/elm+json';

export interface MeasureArtifacts {
  measure: Measure;
  /** A collection Bundle of the Measure, every Library it needs (with ELM) and every ValueSet the ELM names. */
  bundle: Bundle;
}

interface ElmHeader {
  /** The parsed ELM document. */
  json: unknown;
  id: string;
  version: string | undefined;
  includes: { path: string; version: string | undefined }[];
  valueSets: string[];
}

export const unusable = (diagnostics: string) => new FhirError(422, 'processing', diagnostics);

/** The newest resource of `type` in this vault with this canonical URL (and `|version`, when given). */
async function byCanonical<T extends { version?: string }>(
  ctx: FhirContext,
  type: string,
  canonical: string,
): Promise<T | undefined> {
  const [url, version] = canonical.split('|') as [string, string | undefined];
  const narrowed = readable(ctx, type);
  const { matches } = await ctx.store.resources.search(ctx.partition, {
    type,
    filters: [{ kind: 'uri', param: 'url', values: [url], mode: 'exact' }, ...(narrowed ? [narrowed] : [])],
    sort: [{ key: { kind: 'lastUpdated' }, descending: true }],
    limit: 50,
    offset: 0,
    total: false,
  });
  return matches.map((m) => JSON.parse(m.content) as T).find((r) => version === undefined || r.version === version);
}

/**
 * What of `type` the caller reads here: the logic is read as the caller, so granular scopes on Measure, Library
 * or ValueSet narrow it too (the routes have refused a caller without read on them).
 */
function readable(ctx: FhirContext, type: string): SearchFilter | undefined {
  const d = decide(ctx.access, type, 'read');
  return d.allowed ? restrictionFilter(ctx, type, d.restrictions) : undefined;
}

/** The parts of a Library's compiled ELM that decide what else must be present. */
function elmOf(library: Library): ElmHeader {
  const name = library.url ?? `Library/${library.id}`;
  const content = library.content?.find((c) => c.contentType === ELM_JSON);
  if (!content?.data) throw unusable(`Library ${name} has no compiled ELM (content of type ${ELM_JSON})`);
  let elm: {
    library?: {
      identifier?: { id?: string; version?: string };
      includes?: { def?: { path?: string; version?: string }[] };
      valueSets?: { def?: { id?: string }[] };
    };
  };
  try {
    elm = JSON.parse(Buffer.from(content.data, 'base64').toString('utf8'));
  } catch {
    throw unusable(`Library ${name}: its ${ELM_JSON} content is not JSON`);
  }
  const id = elm.library?.identifier?.id;
  if (typeof id !== 'string') throw unusable(`Library ${name}: its ELM has no library identifier`);
  return {
    json: elm,
    id,
    version: elm.library?.identifier?.version,
    includes: (elm.library?.includes?.def ?? []).flatMap((d) =>
      typeof d.path === 'string' ? [{ path: d.path, version: d.version }] : [],
    ),
    valueSets: (elm.library?.valueSets?.def ?? []).flatMap((d) => (typeof d.id === 'string' ? [d.id] : [])),
  };
}

/**
 * Gathers a Measure with its logic from this vault, the way `carevault import` stored them: Measure.library →
 * Library (by canonical), its depends-on Libraries, the Libraries its ELM includes, and the ValueSets the ELM
 * names. Anything missing is named in the error, so the operator knows what to import.
 */
export async function loadMeasure(
  ctx: FhirContext,
  measureId: string,
  o: { valueSets: boolean } = { valueSets: true },
): Promise<MeasureArtifacts> {
  const stored = await ctx.store.resources.current(ctx.partition, 'Measure', measureId);
  if (stored?.content === undefined) throw new FhirError(404, 'not-found', `Measure/${measureId} not found`);
  const d = decide(ctx.access, 'Measure', 'read');
  await assertVisible(ctx, 'Measure', measureId, d.allowed ? d.restrictions : undefined);
  const measure = JSON.parse(stored.content) as Measure;
  if (!measure.library?.length) {
    throw unusable(`Measure/${measureId} names no Library: there is no logic to evaluate`);
  }
  const libraries = new Map<string, Library>();
  const elms: ElmHeader[] = [];
  const queue = measure.library.map((canonical) => ({ canonical, from: `Measure/${measureId}`, required: true }));
  const seen = new Set<string>();
  while (queue.length > 0) {
    const { canonical, from, required } = queue.shift() as (typeof queue)[number];
    if (seen.has(canonical)) continue;
    seen.add(canonical);
    const library = await byCanonical<Library>(ctx, 'Library', canonical);
    if (!library) {
      if (required) throw unusable(`Library ${canonical} (used by ${from}) is not in this vault`);
      continue;
    }
    if (libraries.has(`${library.url}|${library.version}`)) continue;
    libraries.set(`${library.url}|${library.version}`, library);
    elms.push(elmOf(library));
    // depends-on also lists ValueSets and CodeSystems; only the ones that are Libraries are followed here.
    for (const a of library.relatedArtifact ?? []) {
      if (a.type === 'depends-on' && a.resource) {
        queue.push({ canonical: a.resource, from: `Library ${library.url}`, required: false });
      }
    }
  }
  for (const elm of elms) {
    for (const inc of elm.includes) {
      if (!elms.some((e) => e.id === inc.path && (inc.version === undefined || e.version === inc.version))) {
        throw unusable(
          `Library ${inc.path}${inc.version ? `|${inc.version}` : ''} (included by ${elm.id}) is not in this vault`,
        );
      }
    }
  }
  const valueSets = new Map<string, ValueSet>();
  for (const elm of o.valueSets ? elms : []) {
    for (const url of elm.valueSets) {
      if (valueSets.has(url)) continue;
      const vs = await byCanonical<ValueSet>(ctx, 'ValueSet', url);
      if (!vs) throw unusable(`ValueSet ${url} (used by Library ${elm.id}) is not in this vault`);
      valueSets.set(url, vs);
    }
  }
  const bundle: Bundle = {
    resourceType: 'Bundle',
    type: 'collection',
    entry: [measure, ...libraries.values(), ...valueSets.values()].map((resource) => ({ resource })),
  };
  const main = elms[0] as ElmHeader;
  await checkPopulations(measure, main.id, main.json);
  return { measure, bundle };
}
