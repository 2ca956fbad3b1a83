import type { ResourceTransaction } from '../../store/types.ts';
import { decide, type Interaction, type Restriction } from '../../vault/policy.ts';
import { auditRead } from '../audit.ts';
import { insufficientScope } from '../bearer.ts';
import { conditionalMatches } from '../conditional.ts';
import type { FhirContext } from '../context.ts';
import { FhirError, type IssueCode, storeErrorAsFhir } from '../errors.ts';
import { createIn } from '../interactions/create.ts';
import { removeIn } from '../interactions/delete.ts';
import { type PatchDocument, patchIn } from '../interactions/patch.ts';
import { read, vread } from '../interactions/read.ts';
import { search } from '../interactions/search.ts';
import { parseEtag, updateIn, versionMismatch } from '../interactions/update.ts';
import { assertResourceBody, type Prepared, prepare } from '../resource-body.ts';
import { newResourceId } from '../resource-id.ts';
import { responseLimit } from '../response-size.ts';
import { parseSearch } from '../search/parse.ts';
import { assertVersionVisible, assertVisible } from '../search/restrictions.ts';
import { transact } from '../transact.ts';
import { validate } from '../validation/validate.ts';
import { type EntryRequest, rewriteReferences } from './entries.ts';
import { rewritePatchReferences } from './patch-references.ts';
import { type EntryResult, failed, notRun, sizeOf } from './results.ts';

type Plan =
  | { kind: 'create'; e: EntryRequest; id: string; resource: Record<string, unknown> }
  | { kind: 'exists'; e: EntryRequest; id: string; matched: string }
  | { kind: 'update'; e: EntryRequest; id: string; resource: Record<string, unknown>; matched?: string | undefined }
  | { kind: 'patch'; e: EntryRequest; id: string; patch: PatchDocument; matched?: string | undefined }
  | { kind: 'delete'; e: EntryRequest; id: string | undefined; matched?: string | undefined }
  | { kind: 'read'; e: EntryRequest };

const CODE: Record<number, IssueCode> = { 404: 'not-found', 412: 'conflict' };
const fail = (e: EntryRequest, status: number, message: string) =>
  new FhirError(status, CODE[status] ?? 'invalid', `entry[${e.index}]: ${message}`);

/** A resource's validation, its failure said of its entry: a transaction of hundreds must say which one. */
function validateEntry(e: EntryRequest, resource: Record<string, unknown>): void {
  try {
    validate(resource);
  } catch (err) {
    if (!(err instanceof FhirError)) throw err;
    const at = `Bundle.entry[${e.index}].resource`;
    const expression = err.expression?.map((x) => x.replace(/^[A-Za-z]+(?=\.|$)/, at));
    throw new FhirError(err.status, err.code, `entry[${e.index}]: ${err.diagnostics}`, err.headers, expression);
  }
}

function interactionOf(e: EntryRequest): Interaction {
  switch (e.method) {
    case 'POST':
      return 'create';
    case 'PUT':
    case 'PATCH':
      return 'update';
    case 'DELETE':
      return 'delete';
    default:
      return e.versionId ? 'vread' : e.id ? 'read' : 'search-type';
  }
}

async function single(
  ctx: FhirContext,
  e: EntryRequest,
  condition: string,
  tx?: ResourceTransaction,
): Promise<string | undefined> {
  const ids = await conditionalMatches(ctx, e.type, condition, tx ? (q) => tx.search(q) : undefined);
  if (ids.length > 1) throw fail(e, 412, `the condition ${e.type}?${condition} matches more than one resource`);
  return ids[0];
}

/** Decides identities: new ids for creates, matches for conditional creates/updates/deletes (http.html#trules). */
async function plan(ctx: FhirContext, e: EntryRequest): Promise<Plan> {
  switch (e.method) {
    case 'POST': {
      const resource = assertResourceBody(e.resource, e.type);
      validateEntry(e, resource);
      if (e.ifNoneExist) {
        const existing = await single(ctx, e, e.ifNoneExist);
        if (existing) return { kind: 'exists', e, id: existing, matched: existing };
      }
      return { kind: 'create', e, id: newResourceId(), resource };
    }
    case 'PUT': {
      const resource = assertResourceBody(e.resource, e.type);
      if (e.query !== undefined) {
        const match = await single(ctx, e, e.query);
        if (match && resource.id !== undefined && resource.id !== match)
          throw fail(e, 400, 'the resource id differs from the matched resource');
        validateEntry(e, resource);
        const id = match ?? (resource.id as string | undefined) ?? newResourceId();
        return { kind: 'update', e, id, resource, matched: match };
      }
      if (resource.id !== e.id)
        throw fail(e, 400, `resource id "${String(resource.id)}" does not match the URL id "${e.id}"`);
      validateEntry(e, resource);
      return { kind: 'update', e, id: e.id as string, resource };
    }
    case 'PATCH': {
      const patch = e.patch as PatchDocument;
      if (e.query === undefined) return { kind: 'patch', e, id: e.id as string, patch };
      const matched = await single(ctx, e, e.query);
      if (!matched) throw fail(e, 404, `no ${e.type} matches the condition ${e.type}?${e.query}`);
      return { kind: 'patch', e, id: matched, patch, matched };
    }
    case 'DELETE': {
      if (e.query === undefined) return { kind: 'delete', e, id: e.id };
      const matched = await single(ctx, e, e.query);
      return { kind: 'delete', e, id: matched, matched };
    }
    default:
      // A malformed search is refused before anything is written (its reads run after the commit).
      if (e.id === undefined)
        parseSearch(e.type, [...new URLSearchParams(e.query ?? '')], { base: ctx.base, strict: false });
      return { kind: 'read', e };
  }
}

/** Resolves urn:uuid and conditional references (`Organization?identifier=…`) to Type/id. */
async function resolveReferences(ctx: FhirContext, plans: Plan[], identities: Map<string, string>): Promise<void> {
  const conditional = new Map<string, string>();
  for (const p of plans) {
    if (p.kind !== 'create' && p.kind !== 'update' && p.kind !== 'patch') continue;
    const pending: string[] = [];
    rewritePlan(p, (ref) => {
      const mapped = identities.get(ref);
      if (mapped) return mapped;
      if (/^[A-Z][A-Za-z]+\?/.test(ref) && !conditional.has(ref)) pending.push(ref);
      return ref;
    });
    for (const ref of pending) {
      const [type, query] = [ref.slice(0, ref.indexOf('?')), ref.slice(ref.indexOf('?') + 1)];
      const ids = await conditionalMatches(ctx, type, query);
      if (ids.length !== 1)
        throw fail(p.e, 412, `the conditional reference ${ref} matches ${ids.length} resources (needs exactly 1)`);
      conditional.set(ref, `${type}/${ids[0]}`);
    }
    rewritePlan(p, (ref) => {
      if (ref.startsWith('urn:uuid:') || ref.startsWith('urn:oid:')) {
        throw fail(p.e, 400, `the reference ${ref} does not resolve to an entry of this transaction`);
      }
      return conditional.get(ref) ?? ref;
    });
  }
}

/** The references a written entry carries: its resource's, or those its patch sets. */
function rewritePlan(p: Plan & { kind: 'create' | 'update' | 'patch' }, rewrite: (ref: string) => string): void {
  if (p.kind === 'patch') rewritePatchReferences(p.patch, rewrite);
  else rewriteReferences(p.resource, rewrite);
}

/** The version an entry's If-Match names, if any. */
const expectedOf = (e: EntryRequest) => (e.ifMatch === undefined ? undefined : parseEtag(e.ifMatch));

const ORDER: Record<Plan['kind'], number> = { delete: 0, create: 1, exists: 1, update: 2, patch: 2, read: 3 };

/**
 * A transaction (http.html#transaction): every entry's permission is checked first, identities and
 * references are resolved, then DELETE → POST → PUT/PATCH run in one database transaction — all or nothing —
 * and GETs run last. Returns the result of every entry, in entry order.
 */
export async function runTransaction(
  ctx: FhirContext,
  entries: EntryRequest[],
  returnResources: boolean,
): Promise<EntryResult[]> {
  // A condition decided before the write lock can be overtaken by another writer (another node's conditional
  // create of the same resource): it is checked again inside the transaction and the whole plan redone if so.
  for (let attempt = 1; ; attempt++) {
    try {
      return await attemptTransaction(ctx, entries, returnResources);
    } catch (err) {
      if (!(err instanceof ConditionChanged) || attempt >= 3) throw err;
    }
  }
}

class ConditionChanged extends FhirError {
  constructor(e: EntryRequest, condition: string) {
    super(409, 'conflict', `entry[${e.index}]: what ${e.type}?${condition} matches kept changing while writing; retry`);
  }
}

/** The condition a planned entry was decided by, if any. */
function conditionOf(p: Plan): string | undefined {
  if (p.kind === 'exists' || (p.kind === 'create' && p.e.ifNoneExist)) return p.e.ifNoneExist;
  if ((p.kind === 'update' || p.kind === 'patch' || p.kind === 'delete') && p.e.query !== undefined) return p.e.query;
  return undefined;
}

async function attemptTransaction(
  ctx: FhirContext,
  entries: EntryRequest[],
  returnResources: boolean,
): Promise<EntryResult[]> {
  const restrictions = new Map<number, Restriction[] | undefined>();
  for (const e of entries) {
    const d = decide(ctx.access, e.type, interactionOf(e));
    if (!d.allowed) throw insufficientScope(`entry[${e.index}]: ${d.reason}`);
    restrictions.set(e.index, d.restrictions);
  }
  const plans: Plan[] = [];
  const identities = new Map<string, string>();
  const written = new Set<string>();
  for (const e of entries) {
    const p = await plan(ctx, e);
    if (p.kind !== 'read' && p.id !== undefined) {
      const key = `${e.type}/${p.id}`;
      if (written.has(key)) throw fail(e, 400, `${key} is the target of more than one entry`);
      written.add(key);
      if (e.fullUrl) identities.set(e.fullUrl, key);
    }
    plans.push(p);
  }
  await resolveReferences(ctx, plans, identities);
  // Serialized and indexed now, not under the write lock where every other writer would wait for it.
  const prepared = new Map<Plan, Prepared>();
  for (const p of plans) if (p.kind === 'create' || p.kind === 'update') prepared.set(p, prepare(p.resource, p.id));

  const results = new Map<number, EntryResult>();
  const ordered = [...plans].sort((a, b) => ORDER[a.kind] - ORDER[b.kind] || a.e.index - b.e.index);
  await transact(ctx, async (tx) => {
    // Before this transaction's own writes, so that only other writers can change what a condition matches.
    for (const p of ordered) {
      const condition = conditionOf(p);
      if (condition === undefined || p.kind === 'read') continue;
      const planned = p.kind === 'create' ? undefined : p.matched;
      if ((await single(ctx, p.e, condition, tx)) !== planned) throw new ConditionChanged(p.e, condition);
    }
    const known = ordered.filter((p) => p.kind !== 'create' && p.kind !== 'read');
    await tx.prefetch?.(known.flatMap((p) => (p.id === undefined ? [] : [{ type: p.e.type, id: p.id }])));
    for (const p of ordered) {
      switch (p.kind) {
        case 'delete':
          if (p.id !== undefined && (await tx.current(p.e.type, p.id))) {
            await removeIn(tx, p.e.type, p.id, expectedOf(p.e));
          } else if (p.e.ifMatch !== undefined) {
            // What is not there has no version: the precondition fails rather than being passed over.
            const target = p.id === undefined ? `${p.e.type}?${p.e.query}` : `${p.e.type}/${p.id}`;
            throw versionMismatch(target, expectedOf(p.e) as number);
          }
          results.set(p.e.index, { status: 204 });
          break;
        case 'create': {
          const v = await createIn(tx, prepared.get(p) as Prepared);
          results.set(p.e.index, { status: 201, version: v, resource: returnResources ? v.content : undefined });
          break;
        }
        case 'exists': {
          const v = await tx.current(p.e.type, p.id);
          results.set(p.e.index, { status: 200, version: v, resource: returnResources ? v?.content : undefined });
          break;
        }
        case 'update': {
          const { version, created } = await updateIn(tx, prepared.get(p) as Prepared, expectedOf(p.e));
          results.set(p.e.index, {
            status: created ? 201 : 200,
            version,
            resource: returnResources ? version.content : undefined,
          });
          break;
        }
        case 'patch': {
          const version = await patchIn(tx, p.e.type, p.id, p.patch, expectedOf(p.e));
          results.set(p.e.index, { status: 200, version, resource: returnResources ? version.content : undefined });
          break;
        }
        case 'read':
          break;
      }
    }
  });
  // The writes are committed, so from here on a failure is its entry's answer, never the Bundle's: a client told
  // the transaction failed would send it again and write it twice. A read past what the answer may hold is not run.
  let used = [...results.values()].reduce((n, r) => n + sizeOf(r), 0);
  const wrote = ordered.some((p) => p.kind !== 'read');
  for (const p of ordered) {
    if (p.kind !== 'read') continue;
    const room = responseLimit(ctx) - used;
    let r: EntryResult;
    try {
      r = room > 0 ? await readEntry({ ...ctx, responseLimit: room }, p.e, restrictions.get(p.e.index)) : notRun(ctx);
    } catch (thrown) {
      const err = storeErrorAsFhir(thrown);
      // Without writes nothing was committed: the transaction fails whole, as FHIR has it.
      if (!(err instanceof FhirError) || !wrote) throw err;
      r = failed(err);
    }
    results.set(p.e.index, r);
    used += sizeOf(r);
  }
  return entries.map((e) => results.get(e.index) as EntryResult);
}

async function readEntry(
  ctx: FhirContext,
  e: EntryRequest,
  restrictions: Restriction[] | undefined,
): Promise<EntryResult> {
  if (e.id === undefined) {
    return {
      status: 200,
      resource: await search(ctx, e.type, e.query ? [...new URLSearchParams(e.query)] : [], {
        strict: false,
        restrictions,
      }),
    };
  }
  const v = e.versionId ? await vread(ctx, e.type, e.id, e.versionId) : await read(ctx, e.type, e.id);
  await assertVisible(ctx, e.type, e.id, restrictions);
  if (e.versionId) await assertVersionVisible(ctx, v, restrictions);
  await auditRead(ctx, e.versionId ? 'vread' : 'read', v);
  return { status: 200, version: v, resource: v.content };
}
