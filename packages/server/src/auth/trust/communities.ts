import { X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import '../../pki/x509.ts';
import type { Store, TrustCommunityRecord } from '../../store/types.ts';
import { ClientInputError } from '../clients.ts';
import { parseSmartScope, splitScope } from '../smart-scopes.ts';
import type { Anchor } from './chain.ts';
import { verifiedCrl } from './crl.ts';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const DEFAULT_COMMUNITY_SCOPE = 'system/*.rs';
/** A community added or removed by the CLI in another process is seen within this time. */
const CACHE_MS = 1000;

function parseCa(pem: string): X509Certificate {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length !== 1) throw new ClientInputError('--ca must be a PEM file with exactly one certificate');
  let ca: X509Certificate;
  try {
    ca = new X509Certificate(blocks[0] as string);
  } catch {
    throw new ClientInputError('--ca is not a readable X.509 certificate');
  }
  const usage = new x509.X509Certificate(ca.raw).getExtension(x509.KeyUsagesExtension)?.usages;
  if (!ca.ca || (usage !== undefined && (usage & x509.KeyUsageFlags.keyCertSign) === 0))
    throw new ClientInputError('--ca is not a CA certificate (basicConstraints cA and keyCertSign are required)');
  if (Date.now() > Date.parse(ca.validTo)) throw new ClientInputError(`the CA certificate expired ${ca.validTo}`);
  return ca;
}

function communityScope(scope: string | undefined): string {
  const scopes = splitScope(scope ?? DEFAULT_COMMUNITY_SCOPE);
  if (scopes.length === 0) throw new ClientInputError('--scope must name at least one scope');
  for (const s of scopes) {
    if (parseSmartScope(s)?.context !== 'system')
      throw new ClientInputError(`community scope "${s}" must be a SMART system scope such as system/Patient.rs`);
  }
  return scopes.join(' ');
}

/**
 * The trust communities of this authorization server (seed 003): network CAs whose certificate holders may
 * authenticate with an `x5c` client assertion without being registered one by one.
 */
export class TrustCommunities {
  private cached: { at: number; anchors: Anchor[] } | undefined;

  constructor(private readonly store: Store) {}

  /** `carevault trust add`: creates or replaces a community (a new CRL replaces the old one). */
  async add(input: {
    name: string;
    caPem: string;
    crl?: Buffer | string | undefined;
    /** Where the CRL was fetched from: the server fetches it again from there. */
    crlUrl?: string | undefined;
    scope?: string | undefined;
  }) {
    if (!NAME_RE.test(input.name))
      throw new ClientInputError('community name must be 1-64 characters of A-Z a-z 0-9 . _ - (starting alnum)');
    const ca = parseCa(input.caPem);
    let crlPem: string | undefined;
    if (input.crl !== undefined) crlPem = (await verifiedCrl(ca, input.crl)).toString('pem');
    const record: TrustCommunityRecord = {
      name: input.name,
      caPem: ca.toString(),
      crlPem,
      crlUrl: crlPem === undefined ? undefined : input.crlUrl,
      scope: communityScope(input.scope),
      createdAt: Math.floor(Date.now() / 1000),
    };
    await this.store.trust.put(record);
    this.cached = undefined;
    return describe(record);
  }

  async list() {
    return (await this.store.trust.list()).map(describe);
  }

  async get(name: string): Promise<TrustCommunityRecord | undefined> {
    return this.store.trust.get(name);
  }

  async remove(name: string): Promise<{ removed: string }> {
    if (!(await this.store.trust.remove(name))) throw new ClientInputError(`community "${name}" not found`);
    this.cached = undefined;
    return { removed: name };
  }

  /** The CAs to validate `x5c` chains against. */
  async anchors(): Promise<Anchor[]> {
    if (this.cached && Date.now() - this.cached.at < CACHE_MS) return this.cached.anchors;
    const anchors = (await this.store.trust.list()).map((r) => ({
      community: r.name,
      ca: new X509Certificate(r.caPem),
      crl: r.crlPem ? new x509.X509Crl(r.crlPem) : undefined,
    }));
    this.cached = { at: Date.now(), anchors };
    return anchors;
  }
}

function describe(r: TrustCommunityRecord) {
  const ca = new X509Certificate(r.caPem);
  const crl = r.crlPem ? new x509.X509Crl(r.crlPem) : undefined;
  return {
    name: r.name,
    ca_subject: ca.subject.replace(/\n/g, ', '),
    ca_sha256: ca.fingerprint256,
    ca_not_after: new Date(ca.validTo).toISOString(),
    scope: r.scope,
    ...(crl
      ? {
          crl: {
            this_update: crl.thisUpdate.toISOString(),
            next_update: crl.nextUpdate?.toISOString(),
            revoked: crl.entries.length,
            ...(r.crlUrl ? { url: r.crlUrl } : {}),
          },
        }
      : {}),
  };
}
