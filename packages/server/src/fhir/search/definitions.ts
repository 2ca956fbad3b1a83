import { readFileSync } from 'node:fs';

export type SearchParamType = 'string' | 'token' | 'date' | 'uri' | 'reference' | 'quantity' | 'number' | 'composite';

export interface SearchParamDef {
  type: SearchParamType;
  /** FHIRPath expressions that apply to this resource type; `targetType` restricts reference branches. */
  branches: { expression: string; targetType?: string }[];
  targets?: string[];
  /** For composite parameters: component types and their expressions relative to each branch result. */
  components?: { type: SearchParamType; expression: string }[];
}

/** resource type → parameter code → definition. */
export type SearchParameterIndex = Record<string, Record<string, SearchParamDef>>;

/** Generated from the official R4 definitions by scripts/generate-search-parameters.ts. */
export const SEARCH_PARAMETERS: SearchParameterIndex = JSON.parse(
  readFileSync(new URL('./search-parameters.json', import.meta.url), 'utf8'),
) as SearchParameterIndex;

/**
 * carevault's one parameter of its own: a Binary's `securityContext` as a reference. R4 defines none on it, yet
 * access to a Binary is to follow its securityContext (binary.html); indexed, a Binary belongs to the compartment
 * of the Patient named there, or of the patients of the resource named there (vault/compartment.ts), for every
 * read, search and write.
 */
(SEARCH_PARAMETERS.Binary as Record<string, SearchParamDef>)['security-context'] = {
  type: 'reference',
  branches: [{ expression: 'Binary.securityContext' }],
};

/** Own entries only: a code such as `constructor` (`subject.constructor=x`) must not find Object's members. */
export function searchParam(type: string, code: string): SearchParamDef | undefined {
  const params = Object.hasOwn(SEARCH_PARAMETERS, type) ? SEARCH_PARAMETERS[type] : undefined;
  return params && Object.hasOwn(params, code) ? params[code] : undefined;
}
