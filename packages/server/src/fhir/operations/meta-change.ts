import type { StoredVersion } from '../../store/types.ts';
import { auditAccess, patientsOfVersion } from '../audit.ts';
import type { FhirContext } from '../context.ts';
import { FhirError } from '../errors.ts';
import { updateIn, versionMismatch } from '../interactions/update.ts';
import { prepare } from '../resource-body.ts';
import { transact } from '../transact.ts';
import { validate } from '../validation/validate.ts';

type Coding = Record<string, unknown> & { system?: string; code: string };

/** What a `$meta-add` or `$meta-delete` asks: the profiles, tags and security labels of its `meta` parameter. */
export interface MetaChange {
  kind: 'add' | 'delete';
  profile: string[];
  tag: Coding[];
  security: Coding[];
}

const SETS = ['profile', 'tag', 'security'] as const;

/**
 * The `meta` (valueMeta, 1..1) of a Parameters body. It may hold profiles, tags and security labels only — what
 * the operations change; a coding needs a code, since a tag is known by its system and code.
 */
export function metaChangeOf(body: unknown, kind: MetaChange['kind']): MetaChange {
  const op = `$meta-${kind}`;
  const b = body as { resourceType?: unknown; parameter?: unknown } | null | undefined;
  if (b?.resourceType !== 'Parameters' || !Array.isArray(b.parameter)) {
    throw bad(`${op} takes a Parameters body with one parameter meta (valueMeta)`);
  }
  const params = b.parameter as Record<string, unknown>[];
  const other = params.find((p) => p?.name !== 'meta');
  if (other) throw bad(`${op} takes one parameter, meta, not ${String(other.name)}`);
  if (params.length !== 1) throw bad(`${op} takes exactly one meta parameter`);
  const meta = params[0]?.valueMeta;
  if (typeof meta !== 'object' || meta === null || Array.isArray(meta)) throw bad(`${op}: meta takes a valueMeta`);
  const extra = Object.keys(meta).find((k) => !(SETS as readonly string[]).includes(k));
  if (extra) throw bad(`${op} changes profile, tag and security, not meta.${extra}`);
  const m = meta as Record<string, unknown>;
  const list = (name: string) => {
    const value = m[name] ?? [];
    if (!Array.isArray(value)) throw bad(`${op}: meta.${name} is a list`);
    return value as unknown[];
  };
  const profile = list('profile').map((p) => {
    if (typeof p !== 'string' || !/^\S+$/.test(p)) throw bad(`${op}: meta.profile holds canonical URLs`);
    return p;
  });
  const codings = (name: 'tag' | 'security') =>
    list(name).map((c) => {
      const coding = c as Record<string, unknown> | null;
      if (typeof coding !== 'object' || coding === null || typeof coding.code !== 'string' || coding.code === '') {
        throw bad(`${op}: each meta.${name} needs a code (a ${name} is known by its system and code)`);
      }
      if (coding.system !== undefined && typeof coding.system !== 'string')
        throw bad(`${op}: meta.${name}.system is a URI`);
      return coding as Coding;
    });
  const change = { kind, profile, tag: codings('tag'), security: codings('security') };
  if (profile.length + change.tag.length + change.security.length === 0) {
    throw bad(`${op}: meta names no profile, tag or security label`);
  }
  return change;
}

/** A tag's or security label's identity (R4 Resource-meta-add: system + code; version and display ignored). */
const identity = (c: { system?: unknown; code?: unknown }) => `${String(c.system ?? '')}|${String(c.code)}`;

/** The meta with the change applied, and whether anything changed (a set already holding a value keeps it). */
export function applyMetaChange(
  meta: Record<string, unknown>,
  change: MetaChange,
): { meta: Record<string, unknown>; changed: boolean } {
  const out: Record<string, unknown> = { ...meta };
  let changed = false;
  const keyOf = (name: (typeof SETS)[number]) => (v: unknown) =>
    name === 'profile' ? String(v) : identity(v as Coding);
  for (const name of SETS) {
    const key = keyOf(name);
    const current = Array.isArray(meta[name]) ? (meta[name] as unknown[]) : [];
    const asked = new Set((change[name] as unknown[]).map(key));
    let next: unknown[];
    if (change.kind === 'delete') next = current.filter((v) => !asked.has(key(v)));
    else {
      const held = new Set(current.map(key));
      next = [...current];
      for (const v of change[name] as unknown[]) {
        if (held.has(key(v))) continue;
        held.add(key(v));
        next.push(v);
      }
    }
    if (next.length === current.length) continue;
    changed = true;
    if (next.length > 0) out[name] = next;
    else delete out[name];
  }
  return { meta: out, changed };
}

/**
 * Applies the change to the current version of `type/id` in one transaction. A change that changes something
 * writes a new version (audited as the patch it is): carevault keeps every version as it was written, where R4
 * lets the operation change a version in place. One that changes nothing writes nothing and is audited as the
 * disclosure of the meta it answers.
 */
export async function writeMeta(
  ctx: FhirContext,
  type: string,
  id: string,
  change: MetaChange,
  expected: number | undefined,
): Promise<StoredVersion | Omit<StoredVersion, 'method'>> {
  const outcome = await transact(ctx, async (tx) => {
    const current = await tx.current(type, id);
    if (!current) throw new FhirError(404, 'not-found', `Resource ${type}/${id} not found`);
    if (current.content === undefined) throw new FhirError(410, 'deleted', `Resource ${type}/${id} has been deleted`);
    if (expected !== undefined && current.version !== expected) throw versionMismatch(`${type}/${id}`, expected);
    const resource = JSON.parse(current.content) as Record<string, unknown>;
    const { meta, changed } = applyMetaChange((resource.meta ?? {}) as Record<string, unknown>, change);
    if (!changed) return { version: current, written: false };
    const next = { ...resource, meta };
    validate(next);
    const { version } = await updateIn(tx, prepare(next, id), current.version, 'PATCH');
    return { version, written: true };
  });
  if (!outcome.written) {
    await auditAccess(ctx, 'operation', {
      objects: [`${type}/${id}/_history/${outcome.version.version}`],
      patients: await patientsOfVersion(ctx, outcome.version),
      query: { raw: `${type}/${id}/$meta-${change.kind}`, description: `$meta-${change.kind}` },
    });
  }
  return outcome.version;
}

const bad = (msg: string) => new FhirError(400, 'invalid', msg);
