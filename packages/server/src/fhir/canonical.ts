import type { SearchFilter } from '../store/types.ts';
import { decide } from '../vault/policy.ts';
import { insufficientScope } from './bearer.ts';
import type { FhirContext } from './context.ts';
import { FhirError } from './errors.ts';
import { restrictionFilter } from './search/restrictions.ts';
import { relativeReference } from './search/values.ts';

/**
 * Conformance resources (ValueSet, StructureDefinition) that a request uses are looked up in its own vault, as
 * the caller: one that may not read `type` there is refused 403 (`what` says what needed it), and granular
 * scopes narrow what it finds. Returns the filter its lookups must add.
 */
export function canonicalReader(ctx: FhirContext, type: string, what: string): SearchFilter | undefined {
  const d = decide(ctx.access, type, 'search-type');
  if (!d.allowed) throw insufficientScope(`${what} reads ${type} resources: ${d.reason}`);
  return restrictionFilter(ctx, type, d.restrictions);
}

/**
 * The `type` resource of this vault that `name` names: a canonical `url`, with `|version` when several versions
 * are stored; `Type/[id]`; or its absolute URL on this server. None, or several, is a 400 that says so.
 */
export async function findCanonical(
  ctx: FhirContext,
  type: string,
  name: string,
  visible: SearchFilter | undefined,
): Promise<Record<string, unknown>> {
  const local = name.startsWith(`${ctx.base}/`) ? name.slice(ctx.base.length + 1) : name;
  const rel = relativeReference(local);
  let filters: SearchFilter[];
  if (rel) {
    if (rel.type !== type) throw invalid(`${name} is not a ${type}`);
    filters = [{ kind: 'id', ids: [rel.id] }];
  } else {
    const bar = name.lastIndexOf('|');
    const url = bar < 0 ? name : name.slice(0, bar);
    filters = [{ kind: 'uri', param: 'url', values: [url], mode: 'exact' }];
    if (bar >= 0) filters.push({ kind: 'token', param: 'version', values: [{ code: name.slice(bar + 1) }] });
  }
  if (visible) filters.push(visible);
  const { matches } = await ctx.store.resources.search(ctx.partition, {
    type,
    filters,
    sort: [],
    limit: 2,
    offset: 0,
    total: false,
  });
  if (matches.length === 0) throw new NoSuchCanonical(`no ${type} ${name} in this vault`);
  if (matches.length > 1) throw invalid(`several ${type} resources are ${name}: name one as url|version`);
  return JSON.parse((matches[0] as { content: string }).content) as Record<string, unknown>;
}

const invalid = (message: string) => new FhirError(400, 'invalid', message);

/** What `findCanonical` throws when the vault holds nothing by that name (a 400 like the others). */
export class NoSuchCanonical extends FhirError {
  constructor(message: string) {
    super(400, 'invalid', message);
  }
}
