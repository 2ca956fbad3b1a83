import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { matchesById, restrictionOf } from '../fhir/search/restriction-filter.ts';
import { limiterOf } from '../http/rate-limit.ts';
import type { SearchFilter, Store } from '../store/types.ts';
import { PARTITION_RE } from '../vault/partitions.ts';
import { decide, resolveVaultAccess, type VaultAccess } from '../vault/policy.ts';
import { vaultOf } from './audience.ts';
import type { AuthServer } from './index.ts';
import { createLaunch, type LaunchContext } from './launch-context.ts';
import type { CertificateSource } from './mtls.ts';
import { TokenVerificationError } from './verifier.ts';

const ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;
const FHIR_USER_RE = /^(Practitioner|PractitionerRole|Patient|RelatedPerson|Person)\/[A-Za-z0-9\-.]{1,64}$/;

export class LaunchInputError extends Error {}

export interface NewLaunch {
  /** The vault: its partition name or its FHIR base URL (the `iss` the EHR will hand the app). */
  partition: string;
  clientId: string;
  patient?: unknown;
  encounter?: unknown;
  fhirUser?: unknown;
  needPatientBanner?: unknown;
  smartStyleUrl?: unknown;
  fhirContext?: unknown;
  host?: string | undefined;
}

const optionalString = (v: unknown, name: string, re: RegExp): string | undefined => {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || !re.test(v)) throw new LaunchInputError(`${name} is not valid`);
  return v;
};

/**
 * Validates and stores an EHR launch context (SMART EHR launch, B12, C15–C18). The patient and encounter
 * must exist in the vault, so an app never receives a context pointing nowhere.
 */
export async function newLaunch(
  store: Store,
  clients: { policy(id: string): Promise<unknown> },
  fhirBase: string,
  input: NewLaunch,
): Promise<{ launch: string; iss: string; expires_in: number }> {
  const partition = input.partition.startsWith('https://') ? vaultOf(input.partition, fhirBase) : input.partition;
  if (!partition || !PARTITION_RE.test(partition) || !(await store.partitions.get(partition))) {
    throw new LaunchInputError('the vault (partition or iss) is not known here');
  }
  if (typeof input.clientId !== 'string' || !(await clients.policy(input.clientId))) {
    throw new LaunchInputError('client_id must name a registered app');
  }
  const patient = optionalString(input.patient, 'patient', ID_RE);
  const encounter = optionalString(input.encounter, 'encounter', ID_RE);
  const fhirUser = optionalString(input.fhirUser, 'fhirUser', FHIR_USER_RE);
  for (const [type, id] of [
    ['Patient', patient],
    ['Encounter', encounter],
  ] as const) {
    if (id !== undefined && (await store.resources.current(partition, type, id))?.content === undefined) {
      throw new LaunchInputError(`${type}/${id} does not exist in this vault`);
    }
  }
  if (input.needPatientBanner !== undefined && typeof input.needPatientBanner !== 'boolean') {
    throw new LaunchInputError('need_patient_banner must be a boolean');
  }
  const style = optionalString(input.smartStyleUrl, 'smart_style_url', /^https:\/\/\S{1,2000}$/);
  let fhirContext: { reference: string }[] | undefined;
  if (input.fhirContext !== undefined) {
    if (
      !Array.isArray(input.fhirContext) ||
      input.fhirContext.length > 20 ||
      !input.fhirContext.every(
        (c) => typeof c?.reference === 'string' && /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.test(c.reference),
      )
    ) {
      throw new LaunchInputError('fhirContext must be an array of {"reference": "Type/id"}');
    }
    fhirContext = (input.fhirContext as { reference: string }[]).map((c) => ({ reference: c.reference }));
  }
  const context: LaunchContext = {
    partition,
    clientId: input.clientId,
    patient,
    encounter,
    fhirUser,
    needPatientBanner: input.needPatientBanner as boolean | undefined,
    smartStyleUrl: style,
    fhirContext,
    host: input.host,
  };
  const { launch, expiresIn } = await createLaunch(store, context);
  return { launch, iss: `${fhirBase}/${partition}`, expires_in: expiresIn };
}

/**
 * Whether the host's own token reads `type/id`: a launch hands the app a context, so the host names only what it
 * may read itself, under its granular scopes too. Narrowed, an id that does not exist is refused alike (403), so
 * the answer does not tell whether something outside the scopes exists; unnarrowed, newLaunch says it does not.
 */
async function hostReads(store: Store, access: VaultAccess, base: string, type: string, id: unknown) {
  const d = decide(access, type, 'read');
  if (!d.allowed) return false;
  if (typeof id !== 'string' || !ID_RE.test(id)) return true;
  let filter: SearchFilter | undefined;
  try {
    filter = restrictionOf(base, type, d.restrictions);
  } catch {
    return false; // a granular query the server cannot evaluate reads nothing
  }
  if (!filter) return true;
  return matchesById((q) => store.resources.search(access.partition, q), type, id, filter);
}

/**
 * `POST /oauth/launch`: an EHR host creates a launch context before opening an app with `?iss=…&launch=…`.
 * The host authenticates with its own access token and must be able to read the patient in that vault;
 * the launched user is later bounded by the host's grants there.
 */
export async function launchRoutes(
  app: FastifyInstance,
  o: {
    auth: AuthServer;
    store: Store;
    clients: { policy(id: string): Promise<unknown> };
    fhirBase: string;
    certificates: CertificateSource;
  },
): Promise<void> {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    'application/json',
    { parseAs: 'string', bodyLimit: 64 * 1024 },
    app.getDefaultJsonParser('error', 'error'),
  );
  const error = (reply: FastifyReply, status: number, code: string, description: string) =>
    reply.code(status).header('cache-control', 'no-store').send({ error: code, error_description: description });

  app.post('/oauth/launch', async (req: FastifyRequest, reply) => {
    const header = req.headers.authorization ?? '';
    const token = /^Bearer +(\S+)$/i.exec(header)?.[1];
    if (!token) {
      void reply.header('www-authenticate', 'Bearer realm="carevault"');
      return error(reply, 401, 'invalid_token', 'a Bearer access token of the EHR host is required');
    }
    let claims: Awaited<ReturnType<AuthServer['verifier']['verify']>>;
    try {
      const certificate = o.certificates.certificate({ socket: req.raw.socket, headers: req.headers });
      claims = await o.auth.verifier.verify(token, { certificate });
    } catch (err) {
      if (!(err instanceof TokenVerificationError)) throw err;
      void reply.header('www-authenticate', `Bearer realm="carevault", error="invalid_token"`);
      return error(reply, 401, 'invalid_token', err.message);
    }
    const limiter = limiterOf(req.raw);
    const decision = limiter ? await limiter.take(`client:${claims.client_id}`) : undefined;
    if (decision && !decision.allowed) {
      void reply.header('retry-after', String(decision.retryAfterSeconds));
      return error(reply, 429, 'temporarily_unavailable', 'rate limit exceeded; retry after the Retry-After delay');
    }
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (typeof body !== 'object' || Array.isArray(body))
      return error(reply, 400, 'invalid_request', 'send a JSON object');
    const target = typeof body.iss === 'string' ? body.iss : typeof body.partition === 'string' ? body.partition : '';
    const partition = target.startsWith('https://') ? vaultOf(target, o.fhirBase) : target;
    const access =
      partition && PARTITION_RE.test(partition) && !claims.extensions?.carevault
        ? await resolveVaultAccess(o.store, partition, claims)
        : undefined;
    // Same answer for a vault the host cannot reach as for one that does not exist.
    if (!access) return error(reply, 404, 'invalid_request', 'the vault is not known here');
    for (const [type, id] of [
      ['Patient', body.patient],
      ['Encounter', body.encounter],
    ] as const) {
      if (id !== undefined && !(await hostReads(o.store, access, `${o.fhirBase}/${partition}`, type, id))) {
        return error(reply, 403, 'insufficient_scope', `the host may not read this ${type} in this vault`);
      }
    }
    try {
      const created = await newLaunch(o.store, o.clients, o.fhirBase, {
        partition: partition as string,
        clientId: body.client_id as string,
        patient: body.patient,
        encounter: body.encounter,
        fhirUser: body.fhirUser,
        needPatientBanner: body.need_patient_banner,
        smartStyleUrl: body.smart_style_url,
        fhirContext: body.fhirContext,
        host: access.clientId,
      });
      return reply.code(201).header('cache-control', 'no-store').send(created);
    } catch (err) {
      if (err instanceof LaunchInputError) return error(reply, 400, 'invalid_request', err.message);
      throw err;
    }
  });
}
