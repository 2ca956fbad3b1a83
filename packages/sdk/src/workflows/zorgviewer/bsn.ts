/** The Dutch citizen service number's naming system (nl-core-patient). */
export const BSN_SYSTEM = 'http://fhir.nl/fhir/NamingSystem/bsn';

/** Seed 001, test case 3: what the viewer says for a BSN that cannot be a real one. */
export const INVALID_BSN_WARNING = 'Deze patiënt heeft een ongeldig of nog niet gevalideerd BSN nummer';

/** Nine digits passing the "elfproef" (weights 9…2 and −1, sum divisible by 11), as every issued BSN does. */
export function isValidBsn(bsn: string): boolean {
  if (!/^\d{9}$/.test(bsn)) return false;
  let sum = 0;
  for (let i = 0; i < 8; i++) sum += Number(bsn[i]) * (9 - i);
  sum -= Number(bsn[8]);
  return sum % 11 === 0 && sum !== 0;
}
