/** FHIR search comparison prefixes (search.html#prefix), as the store receives them; `po` (overlaps) from `_filter`. */
export type Prefix = 'eq' | 'ne' | 'gt' | 'lt' | 'ge' | 'le' | 'sa' | 'eb' | 'ap' | 'po';
