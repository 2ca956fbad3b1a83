import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { auditAccess } from '../audit.ts';
import { canonicalReader, findCanonical } from '../canonical.ts';
import { conceptOf } from '../code-system.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import type { RouteHelpers, VaultParams } from '../route-helpers.ts';
import { expandValueSet, valueSetLookup } from '../value-set-expansion.ts';
import { type CodedInput, codedInput } from './coded-input.ts';
import { operationParams } from './operation-params.ts';

const COMPLEX = ['coding', 'codeableConcept'];
type Found = { system?: string; code: string; display?: string };
type Answer = { result: boolean; message?: string; display?: string };

/**
 * `$validate-code` on ValueSet and CodeSystem (R4 ValueSet-validate-code, CodeSystem-validate-code) against what
 * this vault holds: is the code in the ValueSet's expansion (fhir/value-set-expansion.ts), or a concept of the
 * CodeSystem? Answered 200 with `result` either way; a display other than the one given there is a message,
 * not a failure. The caller needs read access to the type; each request writes an operation AuditEvent.
 */
export function validateCodeRoutes(app: FastifyInstance, h: Pick<RouteHelpers, 'context' | 'allow' | 'idOf'>) {
  const run = async (
    req: FastifyRequest<{ Params: VaultParams }>,
    reply: FastifyReply,
    type: 'ValueSet' | 'CodeSystem',
    id?: string,
  ) => {
    const ctx = await h.context(req);
    h.allow(ctx, type, 'read');
    const params = operationParams(req, COMPLEX);
    const version = type === 'ValueSet' ? 'valueSetVersion' : 'version';
    const takes = ['url', version, 'code', 'system', 'display'];
    for (const name of params.keys()) {
      if (!takes.includes(name) && !COMPLEX.includes(name)) {
        throw bad(`$validate-code takes ${[...takes, ...COMPLEX].join(', ')}, not ${name}`);
      }
    }
    const url = params.get('url') ?? undefined;
    if (id !== undefined && (url !== undefined || params.has(version))) {
      throw bad(`on an instance $validate-code takes no url or ${version}`);
    }
    if (id === undefined && url === undefined) throw bad(`give the ${type}: url, or ${type}/[id]/$validate-code`);
    const name =
      id !== undefined ? `${type}/${id}` : params.has(version) ? `${url}|${params.get(version)}` : (url as string);
    const { resource, answer } =
      type === 'ValueSet' ? await inValueSet(ctx, req, params, name) : await inCodeSystem(ctx, req, params, name);
    await auditAccess(ctx, 'operation', {
      objects: [`${type}/${String(resource.id)}`],
      query: { raw: `${type}/$validate-code?${params}`, description: '$validate-code' },
    });
    return reply.type(FHIR_JSON).send({
      resourceType: 'Parameters',
      parameter: [
        { name: 'result', valueBoolean: answer.result },
        ...(answer.message ? [{ name: 'message', valueString: answer.message }] : []),
        ...(answer.display ? [{ name: 'display', valueString: answer.display }] : []),
      ],
    });
  };
  for (const type of ['ValueSet', 'CodeSystem'] as const) {
    for (const method of ['get', 'post'] as const) {
      app[method]<{ Params: VaultParams }>(`/:partition/${type}/$validate-code`, (req, reply) => run(req, reply, type));
      app[method]<{ Params: VaultParams }>(`/:partition/${type}/:id/$validate-code`, (req, reply) =>
        run(req, reply, type, h.idOf(req)),
      );
    }
  }
}

async function inValueSet(ctx: FhirContext, req: FastifyRequest, params: URLSearchParams, name: string) {
  const input = codedInput(req, params, '$validate-code', { codeableConcept: true });
  const { valueSet, codes } = await expandValueSet(valueSetLookup(ctx, '$validate-code'), name);
  const find = (c: Found) => codes.find((x) => x.system === c.system && x.code === c.code);
  return { resource: valueSet, answer: judge(input, find, `ValueSet ${String(valueSet.url ?? name)}`) };
}

async function inCodeSystem(ctx: FhirContext, req: FastifyRequest, params: URLSearchParams, name: string) {
  const visible = canonicalReader(ctx, 'CodeSystem', '$validate-code');
  const cs = await findCanonical(ctx, 'CodeSystem', name, visible);
  const system = typeof cs.url === 'string' ? cs.url : undefined;
  const input = codedInput(req, params, '$validate-code', { codeableConcept: true, ...(system ? { system } : {}) });
  const find = (c: Found) => (c.system === system ? conceptOf(cs, c.code) : undefined);
  const where = `CodeSystem ${system ?? name}${cs.content !== 'complete' ? ` (which holds content "${String(cs.content)}")` : ''}`;
  return { resource: cs, answer: judge(input, find, where) };
}

/** The first coding found decides; one that is not found names what it was checked against. */
function judge(input: CodedInput, find: (c: Found) => { display?: string } | undefined, where: string): Answer {
  for (const c of input.codings) {
    const found = find(c);
    if (!found) continue;
    const answer: Answer = { result: true, ...(found.display ? { display: found.display } : {}) };
    if (c.display !== undefined && found.display !== undefined && c.display !== found.display) {
      answer.message = `the display of ${c.system}|${c.code} is "${found.display}", not "${c.display}"`;
    }
    return answer;
  }
  const asked = input.codings.map((c) => `${c.system ?? '(no system)'}|${c.code}`).join(', ');
  return {
    result: false,
    message: `${input.concept ? 'none of ' : ''}${asked} ${input.concept ? 'is' : 'is not'} in ${where}`,
  };
}

const bad = (message: string) => new FhirError(400, 'invalid', message);
