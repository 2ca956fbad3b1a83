/** Resource servers this AS issues tokens for: the FHIR base and (for launches) any vault under it. */
export function isFhirResource(resource: string, fhirBase: string): boolean {
  return resource === fhirBase || vaultOf(resource, fhirBase) !== undefined;
}

/** The partition a vault base names (`{fhirBase}/{partition}`), or undefined. */
export function vaultOf(resource: string, fhirBase: string): string | undefined {
  if (!resource.startsWith(`${fhirBase}/`)) return undefined;
  const name = resource.slice(fhirBase.length + 1);
  return /^[A-Za-z0-9_-]{1,64}$/.test(name) ? name : undefined;
}
