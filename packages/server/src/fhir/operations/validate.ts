import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Interaction } from '../../vault/policy.ts';
import { auditAccess } from '../audit.ts';
import { canonicalReader, findCanonical, NoSuchCanonical } from '../canonical.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { FHIR_JSON } from '../format.ts';
import { bindingIssues } from '../profile-bindings.ts';
import { assertResourceBody } from '../resource-body.ts';
import type { RouteHelpers, VaultParams } from '../route-helpers.ts';
import { profileIssues, type ValidationIssue, validationIssues } from '../validation/validate.ts';

type Mode = 'create' | 'update' | 'delete';
const MODES: readonly string[] = ['create', 'update', 'delete'];
/** The permission a mode asks of the caller; plain validation is asked as a create would be. */
const NEEDS: Record<Mode | 'none', Interaction> = {
  none: 'create',
  create: 'create',
  update: 'update',
  delete: 'delete',
};

interface Input {
  resource: unknown;
  mode: Mode | undefined;
  profile: string | undefined;
}

/**
 * The operation's parameters (operation-resource-validate.html): a bare resource, or Parameters with `resource`,
 * `mode` and `profile`; `mode` and `profile` may also come in the query string, as HAPI takes them.
 */
function inputOf(req: FastifyRequest, type: string): Input {
  const query = new URLSearchParams(req.raw.url?.split('?')[1] ?? '');
  let mode = query.get('mode') ?? undefined;
  let profile = query.get('profile') ?? undefined;
  let resource: unknown = req.body;
  const body = req.body as { resourceType?: unknown; parameter?: unknown } | undefined;
  if (type !== 'Parameters' && body?.resourceType === 'Parameters') {
    resource = undefined;
    if (!Array.isArray(body.parameter)) throw new FhirError(400, 'invalid', 'Parameters without parameter');
    for (const p of body.parameter as Record<string, unknown>[]) {
      const value = p?.valueCode ?? p?.valueString ?? p?.valueUri ?? p?.valueCanonical;
      if (p?.name === 'resource') resource = p.resource;
      else if (p?.name === 'mode' && typeof value === 'string') mode = value;
      else if (p?.name === 'profile' && typeof value === 'string') profile = value;
      else
        throw new FhirError(400, 'not-supported', `$validate takes resource, mode and profile, not ${String(p?.name)}`);
    }
  }
  if (mode !== undefined && !MODES.includes(mode)) {
    throw new FhirError(400, 'value', `mode "${mode}" is not one of create, update, delete`);
  }
  return { resource, mode: mode as Mode | undefined, profile };
}

/** Every reason the content would not be accepted: the R4 definitions, then what the mode adds. */
function issuesOf(type: string, id: string | undefined, input: Input): ValidationIssue[] {
  if (input.mode === 'delete') return [];
  if (input.resource === undefined) {
    throw new FhirError(400, 'required', 'give the resource to validate (the body, or the parameter "resource")');
  }
  const resource = input.resource as Record<string, unknown>;
  if (typeof resource !== 'object' || resource === null || Array.isArray(resource) || resource.resourceType !== type) {
    // Not this type's content at all: there is nothing to check it against.
    throw new FhirError(400, 'invalid', `the resource to validate must have resourceType ${type}`, {}, [
      'resourceType',
    ]);
  }
  const issues: ValidationIssue[] = [];
  try {
    assertResourceBody(resource, type);
  } catch (err) {
    if (!(err instanceof FhirError)) throw err;
    issues.push({ code: err.code, diagnostics: err.diagnostics, expression: err.expression });
  }
  if (input.mode === 'update') {
    if (resource.id === undefined) {
      issues.push({ code: 'required', diagnostics: 'an update carries the resource id', expression: [`${type}.id`] });
    } else if (resource.id !== id) {
      const diagnostics = `resource id "${String(resource.id)}" does not match the URL id "${id}"`;
      issues.push({ code: 'invalid', diagnostics, expression: [`${type}.id`] });
    }
  }
  return [...issues, ...validationIssues(resource)];
}

const issueKey = (i: ValidationIssue) => `${i.expression?.join(',')}|${i.diagnostics}`;

/** A profile the resource cannot conform to: one of another type. */
class OtherType extends FhirError {}

/**
 * A profile to validate against besides the R4 definition: a StructureDefinition of this vault (as the caller
 * may read it) that constrains this type and carries its snapshot.
 */
async function profileFor(ctx: FhirContext, type: string, name: string, what: string): Promise<Profile> {
  const visible = canonicalReader(ctx, 'StructureDefinition', what);
  const sd = await findCanonical(ctx, 'StructureDefinition', name, visible);
  if (sd.type !== type)
    throw new OtherType(400, 'invalid', `profile ${name} constrains ${String(sd.type)}, not ${type}`);
  const elements = (sd.snapshot as { element?: unknown } | undefined)?.element;
  if (!Array.isArray(elements) || elements.length === 0) {
    throw new FhirError(
      400,
      'not-supported',
      `profile ${name} has no snapshot: carevault validates against a profile's snapshot and does not generate one`,
    );
  }
  return { name, sd };
}

interface Profile {
  name: string;
  sd: Record<string, unknown>;
}

/** Each is a search of the vault: a resource claiming thousands of profiles does not get thousands. */
const DECLARED_LIMIT = 10;

/**
 * The profiles the resource claims in `meta.profile`, as the HL7 validator and HAPI treat them: one stored in the
 * vault is validated against; one that cannot be (unknown here, ambiguous, without a snapshot, not readable by
 * the caller) is a warning saying why, since a claim is not wrong for being unknown to this server; a profile of
 * another type is an error, since the resource cannot conform to it.
 */
async function declaredProfiles(
  ctx: FhirContext,
  type: string,
  resource: Record<string, unknown>,
  skip: (name: string) => boolean,
): Promise<{ profiles: Profile[]; issues: ValidationIssue[] }> {
  const claimed = (resource.meta as { profile?: unknown } | undefined)?.profile;
  const profiles: Profile[] = [];
  const issues: ValidationIssue[] = [];
  if (!Array.isArray(claimed)) return { profiles, issues };
  const seen = new Set<string>();
  for (const [index, name] of claimed.entries()) {
    if (typeof name !== 'string' || name === '' || skip(name) || seen.has(name)) continue;
    seen.add(name);
    const expression = [`${type}.meta.profile[${index}]`];
    if (seen.size > DECLARED_LIMIT) {
      const diagnostics = `meta.profile ${name} was not checked: at most ${DECLARED_LIMIT} declared profiles are`;
      issues.push({ severity: 'warning', code: 'too-costly', diagnostics, expression });
      continue;
    }
    try {
      profiles.push(await profileFor(ctx, type, name, 'checking a resource against its meta.profile'));
    } catch (err) {
      if (!(err instanceof FhirError) || err.status >= 500) throw err;
      if (err instanceof OtherType) {
        issues.push({ code: 'invalid', diagnostics: `meta.profile: ${err.diagnostics}`, expression });
        continue;
      }
      const code = err instanceof NoSuchCanonical ? 'not-found' : err.code;
      const diagnostics = `meta.profile ${name} was not checked: ${err.diagnostics}`;
      issues.push({ severity: 'warning', code, diagnostics, expression });
    }
  }
  return { profiles, issues };
}

/**
 * `$validate` (operation-resource-validate.html) on a type and on an instance: would this content be accepted,
 * generally or as a create, an update or a delete? Answered 200 whether or not it would, with every problem as
 * an error issue; a 4xx means the validation itself could not be done. Nothing is read or written; the caller
 * needs the permission the mode's interaction would, and the request is audited as an operation.
 */
export function validateRoutes(app: FastifyInstance, h: Pick<RouteHelpers, 'context' | 'allow' | 'typeOf' | 'idOf'>) {
  const run = async (ctx: FhirContext, req: FastifyRequest<{ Params: VaultParams }>, id: string | undefined) => {
    const type = h.typeOf(req);
    const input = inputOf(req, type);
    if (!id && (input.mode === 'update' || input.mode === 'delete')) {
      throw new FhirError(
        400,
        'invalid',
        `mode ${input.mode} validates against a resource: POST ${type}/[id]/$validate`,
      );
    }
    const base = `http://hl7.org/fhir/StructureDefinition/${type}`;
    const isBase = (name: string) => name.replace(/\|4\.0\.1$/, '') === base;
    h.allow(ctx, type, NEEDS[input.mode ?? 'none']);
    const named = input.profile !== undefined && isBase(input.profile) ? undefined : input.profile;
    const profile = named === undefined ? undefined : await profileFor(ctx, type, named, '$validate with a profile');
    const issues = issuesOf(type, id, input);
    const resource = input.resource as Record<string, unknown> | undefined;
    const declared =
      resource && input.mode !== 'delete'
        ? await declaredProfiles(ctx, type, resource, (name) => isBase(name) || name === named)
        : { profiles: [], issues: [] };
    const seen = new Set(issues.map(issueKey));
    // Concatenated, not spread into push(): a hostile resource may fail a profile in 100,000 places.
    let found = [...declared.issues];
    for (const p of [...(profile ? [profile] : []), ...declared.profiles]) {
      found = found.concat(profileIssues(resource as Record<string, unknown>, p.sd));
      found = found.concat(await bindingIssues(ctx, resource as Record<string, unknown>, p.name, p.sd));
    }
    for (const i of found) {
      if (!seen.has(issueKey(i))) issues.push(i);
      seen.add(issueKey(i));
    }
    const target = id ? `${type}/${id}` : type;
    const asked = new URLSearchParams([
      ...(input.mode ? [['mode', input.mode]] : []),
      ...(named ? [['profile', named]] : []),
    ]).toString();
    await auditAccess(ctx, 'operation', {
      query: { raw: `${target}/$validate${asked ? `?${asked}` : ''}`, description: '$validate' },
    });
    const checked = [named ?? base, ...declared.profiles.map((p) => p.name)].join(', ');
    const accepted = !issues.some((i) => (i.severity ?? 'error') === 'error');
    const verdict = issues.length ? 'no errors' : 'no issues';
    const outcome = {
      resourceType: 'OperationOutcome',
      issue: [
        ...issues.map((i) => ({
          severity: i.severity ?? 'error',
          code: i.code,
          diagnostics: i.diagnostics,
          expression: i.expression,
        })),
        ...(accepted
          ? [
              {
                severity: 'information',
                code: 'informational',
                diagnostics: input.mode
                  ? `${verdict}: the ${input.mode} of ${target} would be accepted`
                  : `${verdict}: the resource conforms to ${checked}`,
              },
            ]
          : []),
      ],
    };
    return outcome;
  };
  // R4 allows GET for an operation whose parameters are all primitive; $validate's resource is not.
  const postOnly = () => {
    throw new FhirError(405, 'not-supported', '$validate takes the resource in the body of a POST', { allow: 'POST' });
  };
  app.get('/:partition/:type/$validate', postOnly);
  app.get('/:partition/:type/:id/$validate', postOnly);
  app.post<{ Params: VaultParams }>('/:partition/:type/$validate', async (req, reply) => {
    const ctx = await h.context(req);
    return reply.type(FHIR_JSON).send(await run(ctx, req, undefined));
  });
  app.post<{ Params: VaultParams }>('/:partition/:type/:id/$validate', async (req, reply) => {
    const ctx = await h.context(req);
    return reply.type(FHIR_JSON).send(await run(ctx, req, h.idOf(req)));
  });
}
