import { CarevaultError, FhirResponseError } from './errors.js';
import { FhirClient, type FhirClientOptions } from './fhir-client.js';

const ACCOUNT_PREFIX = 'urn:cara:account:';
const MPI_RE = /^urn:cara:mpi_id:([0-2](?:\.(?:0|[1-9][0-9]*))+)\/([0-9a-fA-F-]{8,64})$/;

/** AIM answered that it knows no account for the MPI id (or none this client may see: AIM does not say which). */
export class AccountNotFoundError extends CarevaultError {
  constructor(readonly mpiIdUrn: string) {
    super(`AIM knows no account for ${mpiIdUrn} (or this client has no access to it)`);
  }
}

/** `urn:cara:account:alice_1234` → `alice_1234` (seed 000: the partition is the Account URN's suffix). */
export function partitionOf(accountUrn: string): string {
  const id = accountUrn.startsWith(ACCOUNT_PREFIX) ? accountUrn.slice(ACCOUNT_PREFIX.length) : '';
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(id)) {
    throw new CarevaultError(`"${accountUrn}" is not an Account URN of the form urn:cara:account:<id>`);
  }
  return id;
}

export interface AimClientOptions extends Omit<FhirClientOptions, 'baseUrl'> {
  /** Where the AIM API lives: the platform's base URL (carevault serves it at <base>/aim). */
  baseUrl: string;
}

/**
 * The identifier service: MPI-ID URN → Account URN, through CARA's query API or, as the alternative, IHE PIXm
 * `$ihe-pix` (ITI-83). Requests retry like every SDK request (they are reads).
 */
export class AimClient {
  private readonly http: FhirClient;

  constructor(options: AimClientOptions) {
    this.http = new FhirClient({ ...options, baseUrl: `${options.baseUrl.replace(/\/$/, '')}/aim` });
  }

  async accountUrn(mpiIdUrn: string, o: { signal?: AbortSignal } = {}): Promise<string> {
    assertMpiId(mpiIdUrn);
    try {
      const r = await this.http.body<{ accountUrn?: unknown }>(
        'POST',
        'api/v1/query/get-account-urn-from-mpi-id-urn',
        { mpiIdUrn },
        { retry: true, headers: { accept: 'application/json', 'content-type': 'application/json' }, ...o },
      );
      if (typeof r?.accountUrn !== 'string') throw new CarevaultError('AIM answered without an accountUrn');
      return r.accountUrn;
    } catch (err) {
      if (err instanceof FhirResponseError && err.status === 404) throw new AccountNotFoundError(mpiIdUrn);
      throw err;
    }
  }

  /** The same lookup through PIXm: the account URN among the identifiers `$ihe-pix` returns. */
  async accountUrnViaPix(mpiIdUrn: string, o: { signal?: AbortSignal } = {}): Promise<string> {
    const [, oid, id] = assertMpiId(mpiIdUrn);
    try {
      const params = await this.http.body<{ parameter?: { name: string; valueIdentifier?: { value?: string } }[] }>(
        'GET',
        `Patient/$ihe-pix?sourceIdentifier=${encodeURIComponent(`urn:oid:${oid}|${id}`)}`,
        undefined,
        o,
      );
      const urn = params?.parameter
        ?.map((p) => p.valueIdentifier?.value)
        .find((v): v is string => typeof v === 'string' && v.startsWith(ACCOUNT_PREFIX));
      if (!urn) throw new AccountNotFoundError(mpiIdUrn);
      return urn;
    } catch (err) {
      if (err instanceof FhirResponseError && err.status === 404) throw new AccountNotFoundError(mpiIdUrn);
      throw err;
    }
  }
}

function assertMpiId(mpiIdUrn: string): RegExpExecArray {
  const m = MPI_RE.exec(mpiIdUrn);
  if (!m) throw new CarevaultError(`"${mpiIdUrn}" is not an MPI id of the form urn:cara:mpi_id:<oid>/<uuid>`);
  return m;
}
