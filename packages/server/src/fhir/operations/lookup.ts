import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { auditAccess } from '../audit.ts';
import { canonicalReader } from '../canonical.ts';
import { type Concept, conceptOf, findCodeSystem, parentsOf } from '../code-system.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import type { RouteHelpers, VaultParams } from '../route-helpers.ts';
import { codedInput } from './coded-input.ts';
import { operationParams } from './operation-params.ts';

const TAKES = ['code', 'system', 'version', 'property'];
type Part = Record<string, unknown>;

/**
 * `CodeSystem/$lookup` (R4 CodeSystem-lookup) in the CodeSystems this vault holds: the concept's display, its
 * designations and properties, with `parent` and `child` from the hierarchy; `property` narrows which. A code the
 * CodeSystem does not have is 404. The caller needs read access to CodeSystems; each request is audited.
 */
export function lookupRoutes(app: FastifyInstance, h: Pick<RouteHelpers, 'context' | 'allow'>) {
  const lookup = async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply) => {
    const ctx = await h.context(req);
    h.allow(ctx, 'CodeSystem', 'read');
    const params = operationParams(req, ['coding']);
    for (const name of params.keys()) {
      if (!TAKES.includes(name) && name !== 'coding')
        throw bad(`$lookup takes code, system, version, coding and property, not ${name}`);
    }
    const [asked] = codedInput(req, params, '$lookup', { codeableConcept: false }).codings;
    const { system, code } = asked as { system?: string; code: string };
    if (system === undefined) throw bad('$lookup: the coding needs its system');
    const version = params.get('version') ?? undefined;
    const cs = await findCodeSystem(ctx, canonicalReader(ctx, 'CodeSystem', '$lookup'), system, version);
    await auditAccess(ctx, 'operation', {
      objects: [`CodeSystem/${String(cs.id)}`],
      query: { raw: `CodeSystem/$lookup?${params}`, description: '$lookup' },
    });
    const concept = conceptOf(cs, code);
    if (!concept) throw new FhirError(404, 'not-found', `code "${code}" is not in CodeSystem ${system}`);
    const wanted = params.getAll('property');
    const properties = propertiesOf(cs, concept).filter((p) => wanted.length === 0 || wanted.includes(p.code));
    return reply.type(FHIR_JSON).send({
      resourceType: 'Parameters',
      parameter: [
        { name: 'name', valueString: String(cs.name ?? cs.title ?? system) },
        ...(typeof cs.version === 'string' ? [{ name: 'version', valueString: cs.version }] : []),
        ...(concept.display ? [{ name: 'display', valueString: concept.display }] : []),
        ...(concept.definition ? [{ name: 'definition', valueString: concept.definition }] : []),
        ...(concept.designation ?? []).map((d) => ({ name: 'designation', part: designationParts(d as Part) })),
        ...properties.map((p) => ({ name: 'property', part: [{ name: 'code', valueCode: p.code }, p.value] })),
      ],
    });
  };
  app.get<{ Params: VaultParams }>('/:partition/CodeSystem/$lookup', lookup);
  app.post<{ Params: VaultParams }>('/:partition/CodeSystem/$lookup', lookup);
}

/**
 * The concept's own properties, then its place in the hierarchy (R4 concept-properties `parent`, `child`) as
 * nesting and `parent` properties give it, each once.
 */
function propertiesOf(cs: Record<string, unknown>, concept: Concept): { code: string; value: Part }[] {
  const out: { code: string; value: Part }[] = [];
  const said = new Set<string>();
  const add = (code: string, value: Part) => {
    const key = `${code} ${JSON.stringify(value)}`;
    if (said.has(key)) return;
    said.add(key);
    out.push({ code, value });
  };
  for (const p of concept.property ?? []) {
    const key = Object.keys(p).find((k) => k.startsWith('value'));
    if (typeof p.code === 'string' && key !== undefined) add(p.code, { name: 'value', [key]: p[key] });
  }
  const parents = parentsOf(cs);
  for (const parent of parents.get(concept.code) ?? []) add('parent', { name: 'value', valueCode: parent });
  for (const [code, of] of parents) if (of.has(concept.code)) add('child', { name: 'value', valueCode: code });
  return out;
}

function designationParts(d: Part): Part[] {
  return [
    ...(typeof d.language === 'string' ? [{ name: 'language', valueCode: d.language }] : []),
    ...(d.use && typeof d.use === 'object' ? [{ name: 'use', valueCoding: d.use }] : []),
    ...(typeof d.value === 'string' ? [{ name: 'value', valueString: d.value }] : []),
  ];
}

const bad = (message: string) => new FhirError(400, 'invalid', message);
