import { AuditTrail } from '../audit/trail.ts';
import { ClientRegistry } from '../auth/clients.ts';
import { newLaunch } from '../auth/launch-api.ts';
import type { Config } from '../config/index.ts';
import { withdrawConsents } from '../people/consent-withdrawal.ts';
import { addUser, delegate } from '../people/users.ts';
import { withStore } from './vault.ts';

export const userAdd = (
  config: Config,
  username: string,
  o: { password?: string; passwordStdin?: boolean; account?: string; fhirUser?: string },
  readStdin: () => Promise<string>,
) =>
  withStore(config, async (s) => {
    const password = o.passwordStdin ? (await readStdin()).replace(/\r?\n$/, '') : (o.password ?? '');
    return addUser(s, { username, password, account: o.account, fhirUser: o.fhirUser });
  });

export const userDelegate = (
  config: Config,
  username: string,
  o: { account: string; patient: string; scope?: string },
) => withStore(config, (s) => delegate(s, { username, ...o }));

export const userRevoke = (config: Config, username: string, o: { client?: string }) =>
  withStore(config, (s) => {
    const trail = new AuditTrail(s, config.audit, config.baseUrl, {
      error: (_obj: object, msg: string) => process.stderr.write(`error: ${msg}\n`),
    });
    return withdrawConsents(
      s,
      trail,
      username,
      { client: o.client },
      {
        outcomeDesc: 'consent withdrawn by an administrator (carevault user revoke)',
      },
    );
  });

export const userList = (config: Config) =>
  withStore(config, async (s) =>
    (await s.users.list()).map((u) => ({
      username: u.username,
      partition: u.partition,
      fhirUser: u.fhirUser,
      disabled: u.disabled,
      created_at: new Date(u.createdAt * 1000).toISOString(),
    })),
  );

/** `carevault launch create`: an EHR launch context made by an administrator (or a script standing in for the EHR). */
export const launchCreate = (
  config: Config,
  o: {
    partition: string;
    client: string;
    patient?: string;
    encounter?: string;
    fhirUser?: string;
    banner?: boolean;
    styleUrl?: string;
    host?: string;
  },
) =>
  withStore(config, async (s) => {
    const created = await newLaunch(s, new ClientRegistry(s), `${config.baseUrl}/fhir`, {
      partition: o.partition,
      clientId: o.client,
      patient: o.patient,
      encounter: o.encounter,
      fhirUser: o.fhirUser,
      needPatientBanner: o.banner,
      smartStyleUrl: o.styleUrl,
      host: o.host,
    });
    return created;
  });
