import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { auditAccess } from '../audit.ts';
import { canonicalReader, findCanonical } from '../canonical.ts';
import { ancestorsIn, conceptOf, parentsOf } from '../code-system.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import type { RouteHelpers, VaultParams } from '../route-helpers.ts';
import { complexParams, operationParams } from './operation-params.ts';

const TAKES = ['system', 'version', 'codeA', 'codeB'];
type Obj = Record<string, unknown>;

/**
 * `CodeSystem/$subsumes` (R4 CodeSystem-subsumes) in a CodeSystem this vault holds: `equivalent`, `subsumes`,
 * `subsumed-by` or `not-subsumed`, from its is-a hierarchy (nested concepts and `parent` properties). By `system`
 * (+ `version`) or on the instance; the codes as `codeA`/`codeB` or as `codingA`/`codingB` of the same system.
 */
export function subsumesRoutes(app: FastifyInstance, h: Pick<RouteHelpers, 'context' | 'allow' | 'idOf'>) {
  const subsumes = async (req: FastifyRequest<{ Params: VaultParams }>, reply: FastifyReply, id?: string) => {
    const ctx = await h.context(req);
    h.allow(ctx, 'CodeSystem', 'read');
    const params = operationParams(req, ['codingA', 'codingB']);
    for (const name of params.keys()) {
      if (!TAKES.includes(name))
        throw bad(`$subsumes takes ${[...TAKES, 'codingA', 'codingB'].join(', ')}, not ${name}`);
    }
    const system = params.get('system') ?? undefined;
    if (id !== undefined && (system !== undefined || params.has('version'))) {
      throw bad('on an instance $subsumes takes no system or version');
    }
    if (id === undefined && system === undefined)
      throw bad('give the CodeSystem: system, or CodeSystem/[id]/$subsumes');
    const name =
      id !== undefined
        ? `CodeSystem/${id}`
        : params.has('version')
          ? `${system}|${params.get('version')}`
          : (system as string);
    const cs = await findCanonical(ctx, 'CodeSystem', name, canonicalReader(ctx, 'CodeSystem', '$subsumes'));
    if (cs.hierarchyMeaning !== undefined && cs.hierarchyMeaning !== 'is-a') {
      throw new FhirError(
        400,
        'not-supported',
        `CodeSystem ${name}: its hierarchy means ${String(cs.hierarchyMeaning)}, not is-a`,
      );
    }
    const a = codeOf(req, params, 'A', cs, name);
    const b = codeOf(req, params, 'B', cs, name);
    await auditAccess(ctx, 'operation', {
      objects: [`CodeSystem/${String(cs.id)}`],
      query: { raw: `CodeSystem/$subsumes?${params}`, description: '$subsumes' },
    });
    const parents = parentsOf(cs);
    const ancestors = (code: string) => ancestorsIn(parents, code);
    const outcome =
      a === b ? 'equivalent' : ancestors(b).has(a) ? 'subsumes' : ancestors(a).has(b) ? 'subsumed-by' : 'not-subsumed';
    return reply
      .type(FHIR_JSON)
      .send({ resourceType: 'Parameters', parameter: [{ name: 'outcome', valueCode: outcome }] });
  };
  for (const method of ['get', 'post'] as const) {
    app[method]<{ Params: VaultParams }>('/:partition/CodeSystem/$subsumes', (req, reply) => subsumes(req, reply));
    app[method]<{ Params: VaultParams }>('/:partition/CodeSystem/:id/$subsumes', (req, reply) =>
      subsumes(req, reply, h.idOf(req)),
    );
  }
}

/** `codeX` or `codingX`, one of them, a concept of the CodeSystem (its code as the CodeSystem writes it). */
function codeOf(req: FastifyRequest, params: URLSearchParams, x: 'A' | 'B', cs: Obj, name: string): string {
  if (params.has(`coding${x}`)) throw bad(`$subsumes: coding${x} is a data type, given in a POST Parameters body`);
  const codings = complexParams(req, `coding${x}`, 'valueCoding');
  const code = params.get(`code${x}`) ?? undefined;
  if ((code === undefined) === (codings.length === 0) || codings.length > 1) {
    throw bad(`$subsumes takes one of code${x} or coding${x}`);
  }
  const coding = codings[0];
  if (coding && coding.system !== undefined && coding.system !== cs.url) {
    throw bad(`$subsumes: coding${x} is of ${String(coding.system)}, not of ${String(cs.url)}`);
  }
  const value = code ?? coding?.code;
  if (typeof value !== 'string') throw bad(`$subsumes: coding${x} without a code`);
  const concept = conceptOf(cs, value);
  if (!concept) throw bad(`$subsumes: code "${value}" is not in CodeSystem ${name}`);
  return concept.code;
}

const bad = (message: string) => new FhirError(400, 'invalid', message);
