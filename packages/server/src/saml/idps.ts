import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSecretFile } from '../config/files.ts';
import { type IdpProfile, PROFILES } from './mapping.ts';

/** A SAML identity provider allowed to launch the viewer. */
export interface RegisteredIdp {
  name: string;
  profile: IdpProfile;
  /** The IdP's Issuer. */
  entityId: string;
  /** PEM of the certificate its signatures must verify with. */
  cert: string;
  /** Zorgplatform: where the workflow's Task lives, and the client id the viewer has there. */
  taskFhirBase?: string | undefined;
  taskClientId?: string | undefined;
  taskCa?: string | undefined;
}

/** A mistake in an IdP registration, said in one line. */
export class IdpInputError extends Error {}

/** Beside the platform's other files; every node reads the same registration. */
const path = (dataDir: string) => join(dataDir, 'saml-idps.json');

export function loadIdps(dataDir: string): RegisteredIdp[] {
  const file = path(dataDir);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as RegisteredIdp[]) : [];
}

export interface IdpAddOptions {
  name: string;
  profile: string;
  entityId: string;
  cert: string;
  taskFhirBase?: string;
  taskClientId?: string;
  taskCa?: string;
}

function pem(file: string, what: string): string {
  if (!existsSync(file)) throw new IdpInputError(`file not found: ${file}`);
  const text = readFileSync(file, 'utf8');
  try {
    new X509Certificate(text);
  } catch {
    throw new IdpInputError(`${what} ${file} is not a PEM certificate`);
  }
  return text;
}

/** `viewer idp add`: registers (or replaces, by entity id) an IdP. */
export function addIdp(dataDir: string, o: IdpAddOptions): RegisteredIdp {
  if (!PROFILES.includes(o.profile as IdpProfile))
    throw new IdpInputError(`--profile must be one of ${PROFILES.join(', ')}`);
  if (!o.name || o.name.length > 100) throw new IdpInputError('--name must be 1-100 characters');
  if (!o.entityId || o.entityId.length > 512) throw new IdpInputError('--entity-id is required');
  if (o.taskFhirBase !== undefined) {
    try {
      new URL(o.taskFhirBase);
    } catch {
      throw new IdpInputError(`--task-fhir-base "${o.taskFhirBase}" is not an absolute URL`);
    }
    if (!o.taskClientId) throw new IdpInputError('--task-fhir-base needs --task-client-id');
  }
  const idp: RegisteredIdp = {
    name: o.name,
    profile: o.profile as IdpProfile,
    entityId: o.entityId,
    cert: pem(o.cert, '--cert'),
    ...(o.taskFhirBase ? { taskFhirBase: o.taskFhirBase.replace(/\/$/, ''), taskClientId: o.taskClientId } : {}),
    ...(o.taskCa ? { taskCa: pem(o.taskCa, '--task-ca') } : {}),
  };
  const others = loadIdps(dataDir).filter((i) => i.entityId !== idp.entityId);
  writeSecretFile(path(dataDir), `${JSON.stringify([...others, idp], null, 2)}\n`, 0o644);
  return idp;
}
