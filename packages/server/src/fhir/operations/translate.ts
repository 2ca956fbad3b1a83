import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { SearchFilter } from '../../store/types.ts';
import { auditAccess } from '../audit.ts';
import { canonicalReader, findCanonical } from '../canonical.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import type { RouteHelpers, VaultParams } from '../route-helpers.ts';
import { codedInput } from './coded-input.ts';
import { operationParams } from './operation-params.ts';

const TAKES = ['url', 'conceptMapVersion', 'code', 'system', 'version', 'source', 'target', 'targetsystem', 'reverse'];
/** ConceptMaps one request may walk when it names none: more is a 400 asking for one by url. */
const MAX_MAPS = 20;
type Obj = Record<string, unknown>;
type Target = { code?: string; display?: string; equivalence?: string };
type Element = { code?: string; display?: string; target?: Target[] };
type Group = {
  source?: string;
  sourceVersion?: string;
  target?: string;
  targetVersion?: string;
  element?: Element[];
  unmapped?: { mode?: string; code?: string; display?: string };
};
interface Match {
  equivalence: string;
  concept?: { system?: string; version?: string; code: string; display?: string };
  source: string;
}

/** Read from the target back to the source (`reverse`): the relation is seen from the other side. */
const REVERSED: Record<string, string> = {
  wider: 'narrower',
  narrower: 'wider',
  subsumes: 'specializes',
  specializes: 'subsumes',
};
/** Equivalences that say the codes do not match (R4 concept-map-equivalence). */
const NO_MATCH = new Set(['unmatched', 'disjoint']);

/**
 * `ConceptMap/$translate` (R4 ConceptMap-translate) with the ConceptMaps this vault holds: the instance, the one
 * `url` (+ `conceptMapVersion`) names, or every map from the code's system (at most 20), narrowed by `source` and
 * `target` (ValueSets) and `targetsystem`. `reverse` reads the maps from target to source. A group's `unmapped`
 * answers for a code it has no element for (`provided`: the code itself, equivalent; `fixed`: its code, inexact); `other-map` is not
 * followed. The caller needs ConceptMap read; each request is audited.
 */
export function translateRoutes(app: FastifyInstance, h: Pick<RouteHelpers, 'context' | 'allow' | 'idOf'>) {
  const translate = async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply, id?: string) => {
    const ctx = await h.context(req);
    h.allow(ctx, 'ConceptMap', 'read');
    const params = operationParams(req, ['coding', 'codeableConcept']);
    for (const name of params.keys()) {
      if (!TAKES.includes(name) && name !== 'coding' && name !== 'codeableConcept')
        throw bad(
          name === 'dependency' || name === 'conceptMap'
            ? `$translate: ${name} is not supported by this server`
            : `$translate takes ${[...TAKES, 'coding', 'codeableConcept'].join(', ')}, not ${name}`,
        );
    }
    if (id !== undefined && (params.has('url') || params.has('conceptMapVersion')))
      throw bad('on an instance $translate takes no url or conceptMapVersion');
    const { codings } = codedInput(req, params, '$translate', { codeableConcept: true });
    const reverse = booleanOf(params.get('reverse'));
    const visible = canonicalReader(ctx, 'ConceptMap', '$translate');
    const url = params.get('url') ?? undefined;
    const version = params.get('conceptMapVersion');
    const maps =
      id !== undefined || url !== undefined
        ? [
            await findCanonical(
              ctx,
              'ConceptMap',
              id !== undefined ? `ConceptMap/${id}` : version ? `${url}|${version}` : (url as string),
              visible,
            ),
          ]
        : await mapsFrom(ctx, codings, reverse, visible);
    const source = params.get('source') ?? undefined;
    const target = params.get('target') ?? undefined;
    const chosen = maps.filter(
      (m) =>
        (source === undefined || side(m, reverse ? 'target' : 'source') === source) &&
        (target === undefined || side(m, reverse ? 'source' : 'target') === target),
    );
    await auditAccess(ctx, 'operation', {
      objects: chosen.map((m) => `ConceptMap/${String(m.id)}`),
      query: { raw: `ConceptMap/$translate?${params}`, description: '$translate' },
    });
    const matches: Match[] = [];
    const targetSystem = params.get('targetsystem') ?? undefined;
    const codeVersion = params.get('version') ?? undefined;
    for (const map of chosen) {
      for (const c of codings)
        for (const m of translateWith(map, { ...c, version: codeVersion }, reverse, targetSystem)) matches.push(m);
    }
    const result = matches.some((m) => !NO_MATCH.has(m.equivalence));
    const asked = codings.map((c) => `${c.system ?? ''}|${c.code}`).join(', ');
    return reply.type(FHIR_JSON).send({
      resourceType: 'Parameters',
      parameter: [
        { name: 'result', valueBoolean: result },
        ...(result
          ? []
          : [{ name: 'message', valueString: `no mapping of ${asked} in ${chosen.length} ConceptMap(s)` }]),
        ...matches.map((m) => ({
          name: 'match',
          part: [
            { name: 'equivalence', valueCode: m.equivalence },
            ...(m.concept ? [{ name: 'concept', valueCoding: m.concept }] : []),
            { name: 'source', valueUri: m.source },
          ],
        })),
      ],
    });
  };
  for (const method of ['get', 'post'] as const) {
    app[method]<{ Params: VaultParams }>('/:partition/ConceptMap/$translate', (req, reply) => translate(req, reply));
    app[method]<{ Params: VaultParams }>('/:partition/ConceptMap/:id/$translate', (req, reply) =>
      translate(req, reply, h.idOf(req)),
    );
  }
}

/** The ConceptMaps that map from the codes' systems (to them, in reverse). */
async function mapsFrom(
  ctx: FhirContext,
  codings: { system?: string }[],
  reverse: boolean,
  visible: SearchFilter | undefined,
): Promise<Obj[]> {
  const systems = [...new Set(codings.flatMap((c) => (c.system ? [c.system] : [])))];
  if (systems.length === 0) throw bad('$translate: name the ConceptMap (url) or give the code its system');
  const filters: SearchFilter[] = [
    { kind: 'uri', param: reverse ? 'target-system' : 'source-system', values: systems, mode: 'exact' },
  ];
  if (visible) filters.push(visible);
  const { matches } = await ctx.store.resources.search(ctx.partition, {
    type: 'ConceptMap',
    filters,
    sort: [],
    limit: MAX_MAPS + 1,
    offset: 0,
    total: false,
  });
  if (matches.length > MAX_MAPS)
    throw new FhirError(
      400,
      'too-costly',
      `$translate: more than ${MAX_MAPS} ConceptMaps map ${systems.join(', ')}; name one (url)`,
    );
  return matches.map((m) => JSON.parse(m.content) as Obj);
}

function side(map: Obj, which: 'source' | 'target'): string | undefined {
  const v = map[`${which}Uri`] ?? map[`${which}Canonical`];
  return typeof v === 'string' ? v : undefined;
}

/** The matches of one code in one ConceptMap, in its groups' order. */
function translateWith(
  map: Obj,
  coding: { system?: string; code: string; version?: string | undefined },
  reverse: boolean,
  targetSystem: string | undefined,
): Match[] {
  const source = typeof map.url === 'string' ? map.url : `ConceptMap/${String(map.id)}`;
  const out: Match[] = [];
  for (const g of (map.group as Group[] | undefined) ?? []) {
    const [from, fromVersion, to, toVersion] = reverse
      ? [g.target, g.targetVersion, g.source, g.sourceVersion]
      : [g.source, g.sourceVersion, g.target, g.targetVersion];
    if (coding.system !== undefined && from !== coding.system) continue;
    if (coding.version !== undefined && fromVersion !== undefined && fromVersion !== coding.version) continue;
    if (targetSystem !== undefined && to !== targetSystem) continue;
    const concept = (code: string, display?: string) => ({
      ...(to ? { system: to } : {}),
      ...(toVersion ? { version: toVersion } : {}),
      code,
      ...(display ? { display } : {}),
    });
    const before = out.length;
    for (const e of g.element ?? []) {
      for (const t of e.target ?? []) {
        const equivalence = t.equivalence ?? 'equivalent';
        if (!reverse && e.code === coding.code)
          out.push({ equivalence, ...(t.code ? { concept: concept(t.code, t.display) } : {}), source });
        if (reverse && t.code === coding.code && e.code)
          out.push({
            equivalence: (Object.hasOwn(REVERSED, equivalence) ? REVERSED[equivalence] : undefined) ?? equivalence,
            concept: concept(e.code, e.display),
            source,
          });
      }
    }
    if (out.length > before || reverse) continue;
    if (g.unmapped?.mode === 'provided') out.push({ equivalence: 'equivalent', concept: concept(coding.code), source });
    // A fixed code is the group's fallback (such as "unknown"), not a code of the same meaning.
    if (g.unmapped?.mode === 'fixed' && g.unmapped.code)
      out.push({ equivalence: 'inexact', concept: concept(g.unmapped.code, g.unmapped.display), source });
  }
  return out;
}

function booleanOf(value: string | null): boolean {
  if (value === null || value === 'false') return false;
  if (value === 'true') return true;
  throw bad(`$translate: reverse must be true or false, not "${value}"`);
}

const bad = (message: string) => new FhirError(400, 'invalid', message);
