import { X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import '../../pki/x509.ts';
import type { Store, TrustCommunityRecord } from '../../store/types.ts';
import { fetchCrl, verifiedCrl } from './crl.ts';

export interface CrlRefreshOptions {
  store: Store;
  /** How often every community's CRL is fetched again from where it was loaded (0: never). */
  intervalMs: number;
  log: { info(o: object, msg: string): void; warn(o: object, msg: string): void };
}

/**
 * Fetches each community's CRL again from its distribution point (the URL `trust add --crl` loaded it from), so that
 * a certificate the network revokes is refused without an operator running the command again, and the community
 * is not refused as a whole once the CRL it has passes its nextUpdate. A fetched CRL is taken only when its CA signed
 * it and it is newer than the one held (a stale or replayed CRL cannot bring a revoked certificate back); otherwise
 * the one held stays, and the failure is logged. Every node fetches; they store the same CRL.
 */
export class CrlRefresher {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(private readonly o: CrlRefreshOptions) {}

  start(): void {
    if (this.o.intervalMs <= 0) return;
    this.timer = setInterval(() => this.tick(), this.o.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  private tick(): void {
    if (this.running) return;
    this.running = this.refreshAll().finally(() => {
      this.running = undefined;
    });
  }

  /** One round over every community with a distribution point; a failure of one does not stop the others. */
  async refreshAll(): Promise<void> {
    let communities: TrustCommunityRecord[];
    try {
      communities = await this.o.store.trust.list();
    } catch (err) {
      this.o.log.warn({ err: { message: (err as Error).message } }, 'community CRLs not refreshed');
      return;
    }
    for (const c of communities) {
      if (!c.crlUrl) continue;
      await this.refresh(c, c.crlUrl).catch((err: Error) =>
        this.o.log.warn(
          { community: c.name, url: c.crlUrl, err: { message: err.message } },
          'community CRL not refreshed',
        ),
      );
    }
  }

  private async refresh(c: TrustCommunityRecord, url: string): Promise<void> {
    const crl = await verifiedCrl(new X509Certificate(c.caPem), await fetchCrl(url));
    const held = c.crlPem ? new x509.X509Crl(c.crlPem) : undefined;
    if (held && crl.thisUpdate.getTime() <= held.thisUpdate.getTime()) return;
    if (!(await this.o.store.trust.setCrl(c.name, { caPem: c.caPem, crlUrl: url, crlPem: crl.toString('pem') })))
      return;
    this.o.log.info(
      {
        community: c.name,
        this_update: crl.thisUpdate.toISOString(),
        next_update: crl.nextUpdate?.toISOString(),
        revoked: crl.entries.length,
      },
      'community CRL refreshed',
    );
  }
}
