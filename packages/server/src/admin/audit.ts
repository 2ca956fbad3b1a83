import { userInfo } from 'node:os';
import { exportAudit, parseUntil, pruneAudit, verifyExport } from '../audit/archive.ts';
import { EVENT } from '../audit/balp.ts';
import type { Config } from '../config/index.ts';
import { adminAudit } from './operator.ts';
import { withStore } from './vault.ts';

/** Reading or deleting the trail is itself an event in it (DICOM 110101 Audit Log Used), naming the OS user. */
const logUsed = (command: string, action: 'R' | 'D', desc: string) => ({
  type: EVENT.auditLogUsed,
  action,
  outcome: '0' as const,
  outcomeDesc: desc,
  who: { clientId: command, user: { id: userInfo().username } },
  clientRole: '110150' as const,
});

export const auditVerify = (config: Config) => withStore(config, (s) => s.audit.verify());

export const auditVerifyFile = (file: string) => verifyExport(file);

export const auditExport = (config: Config, o: { until: string; out: string }) =>
  withStore(config, async (s) => {
    const result = await exportAudit(s, { until: parseUntil(o.until), out: o.out });
    await adminAudit(s, config).record(
      logUsed(
        'carevault audit export',
        'R',
        `${result.events} events (${result.start.seq + 1}-${result.end.seq}) exported to ${o.out}`,
      ),
    );
    return result;
  });

export const auditPrune = (config: Config, o: { until: string; withoutExport?: boolean }) =>
  withStore(config, async (s) => {
    const result = await pruneAudit(s, { until: parseUntil(o.until), withoutExport: o.withoutExport });
    if (result.pruned > 0) {
      await adminAudit(s, config).record(
        logUsed(
          'carevault audit prune',
          'D',
          `${result.pruned} events up to ${result.checkpoint?.seq} pruned${o.withoutExport ? ' without an export' : ''}`,
        ),
      );
    }
    return result;
  });
