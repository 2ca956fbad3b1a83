import { limitBody, SMALL_RESPONSE_BYTES } from './body-limit.js';
import { type FhirResponseError, TransportError } from './errors.js';

// How a FHIR server's answer is read: its JSON body, the OperationOutcome of an error, its token challenge.

export async function parseBody(res: Response): Promise<unknown> {
  const text = await res.text();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new TransportError(`${res.url} answered ${res.status} with a body that is not JSON`, res.status);
  }
}

export async function readOutcome(res: Response) {
  try {
    const json = (await limitBody(res, SMALL_RESPONSE_BYTES).json()) as { resourceType?: string };
    return json?.resourceType === 'OperationOutcome' ? (json as FhirResponseError['outcome']) : undefined;
  } catch {
    return undefined;
  }
}

export function isInvalidToken(res: Response): boolean {
  const challenge = res.headers.get('www-authenticate') ?? '';
  // A bare challenge (no token / unknown token) or an explicit invalid_token both mean: get a new one.
  return !/error="(?!invalid_token)/.test(challenge);
}
