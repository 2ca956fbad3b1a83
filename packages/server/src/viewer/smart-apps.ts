import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSecretFile } from '../config/files.ts';
import { ViewerInputError, viewerDir } from './settings.ts';

/** The viewer registered as a SMART app at an EHR (seq-1-fhir): where to send the user, and how to authenticate. */
export interface SmartAppRegistration {
  /** The EHR's FHIR base as it sends it in `iss`. */
  ehr: string;
  clientId: string;
  /** client_secret_basic when set; otherwise private_key_jwt with the viewer's own key. */
  clientSecret?: string | undefined;
  /** PEM trust anchor for the EHR's TLS certificate. */
  ca?: string | undefined;
}

// Holds client secrets: owner-only.
const path = (dataDir: string) => join(viewerDir(dataDir), 'smart-apps.json');

export function loadApps(dataDir: string): SmartAppRegistration[] {
  const file = path(dataDir);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as SmartAppRegistration[]) : [];
}

export function appFor(dataDir: string, iss: string): SmartAppRegistration | undefined {
  const wanted = iss.replace(/\/$/, '');
  return loadApps(dataDir).find((a) => a.ehr === wanted);
}

/** `viewer app add`: registers (or replaces) the viewer's registration at one EHR. */
export function addApp(
  dataDir: string,
  o: { ehr: string; clientId: string; clientSecret?: string; jwks?: string | boolean; ca?: string },
): { ehr: string; clientId: string; auth: string } {
  let ehr: URL;
  try {
    ehr = new URL(o.ehr);
  } catch {
    throw new ViewerInputError(`--ehr "${o.ehr}" is not an absolute URL (the EHR's FHIR base, its iss)`);
  }
  if (ehr.protocol !== 'https:') throw new ViewerInputError('--ehr must be an https URL');
  if (!o.clientId || o.clientId.length > 128) throw new ViewerInputError('--client-id is required');
  if (o.clientSecret !== undefined && o.jwks !== undefined)
    throw new ViewerInputError('give --client-secret or --jwks, not both');
  // The viewer always signs with its own key: a file named here would be ignored, and the EHR would be given
  // keys that sign nothing.
  if (typeof o.jwks === 'string') {
    throw new ViewerInputError(
      "--jwks takes no file: the viewer signs with its own key, whose JWKS is viewer init's jwksFile (or /viewer/jwks)",
    );
  }
  let ca: string | undefined;
  if (o.ca) {
    if (!existsSync(o.ca)) throw new ViewerInputError(`file not found: ${o.ca}`);
    ca = readFileSync(o.ca, 'utf8');
    try {
      new X509Certificate(ca);
    } catch {
      throw new ViewerInputError(`${o.ca} is not a PEM certificate`);
    }
  }
  const app: SmartAppRegistration = {
    ehr: ehr.href.replace(/\/$/, ''),
    clientId: o.clientId,
    ...(o.clientSecret ? { clientSecret: o.clientSecret } : {}),
    ...(ca ? { ca } : {}),
  };
  const others = loadApps(dataDir).filter((a) => a.ehr !== app.ehr);
  writeSecretFile(path(dataDir), `${JSON.stringify([...others, app], null, 2)}\n`, 0o600);
  return { ehr: app.ehr, clientId: app.clientId, auth: app.clientSecret ? 'client_secret_basic' : 'private_key_jwt' };
}
