import { userInfo } from 'node:os';
import type { Coding } from 'fhir/r4.js';
import { EVENT } from '../audit/balp.ts';
import { ClientRegistry } from '../auth/clients.ts';
import { newLaunch } from '../auth/launch-api.ts';
import type { Config } from '../config/index.ts';
import { withdrawConsents } from '../people/consent-withdrawal.ts';
import { addUser, delegate, setPassword, setUserDisabled, undelegate } from '../people/users.ts';
import { VaultInputError } from '../vault/partitions.ts';
import { adminAudit } from './operator.ts';
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

/** `carevault user undelegate`: audited like the other changes to a person's rights. */
export const userUndelegate = (config: Config, username: string, o: { account: string; patient: string }) =>
  withStore(config, async (s) => {
    const result = await undelegate(s, { username, ...o });
    const { revoked } = await withdrawConsents(
      s,
      adminAudit(s, config),
      username,
      { record: { partition: result.partition, patient: result.patient } },
      { outcomeDesc: 'consent withdrawn: the delegation for its record ended (carevault user undelegate)' },
    );
    await adminAudit(s, config).record({
      ...userChanged(
        'carevault user undelegate',
        EVENT.delegationEnded,
        `${username} no longer acts for Patient/${result.patient}`,
      ),
      partition: result.partition,
      patients: [`Patient/${result.patient}`],
    });
    return { ...result, consents_withdrawn: revoked.length };
  });

export const userRevoke = (config: Config, username: string, o: { client?: string }) =>
  withStore(config, (s) =>
    withdrawConsents(
      s,
      adminAudit(s, config),
      username,
      { client: o.client },
      {
        outcomeDesc: 'consent withdrawn by an administrator (carevault user revoke)',
      },
    ),
  );

/** A change to a person's sign-in made at the console: the command and the OS user who ran it. */
const userChanged = (command: string, subtype: Coding, outcomeDesc: string) => ({
  type: EVENT.securityAttributesChanged,
  subtype,
  action: 'U' as const,
  outcome: '0' as const,
  outcomeDesc,
  who: { clientId: command, user: { id: userInfo().username } },
  clientRole: '110150' as const,
});

export const userPassword = (
  config: Config,
  username: string,
  o: { password?: string; passwordStdin?: boolean },
  readStdin: () => Promise<string>,
) =>
  withStore(config, async (s) => {
    const password = o.passwordStdin ? (await readStdin()).replace(/\r?\n$/, '') : (o.password ?? '');
    const result = await setPassword(s, username, password);
    await adminAudit(s, config).record(
      userChanged('carevault user password', EVENT.passwordChanged, `password of ${username} set by an administrator`),
    );
    return result;
  });

/**
 * `carevault user disable`: no more sign-ins, the account page's sessions end, and every consent is withdrawn so
 * that the apps' tokens stop at once (enabling again does not bring them back: the apps ask again).
 */
export const userDisable = (config: Config, username: string) =>
  withStore(config, async (s) => {
    const result = await setUserDisabled(s, username, true);
    const trail = adminAudit(s, config);
    await trail.record(userChanged('carevault user disable', EVENT.userDisabled, `${username} disabled`));
    const { revoked } = await withdrawConsents(
      s,
      trail,
      username,
      {},
      {
        outcomeDesc: 'consent withdrawn: the user was disabled (carevault user disable)',
      },
    );
    return { ...result, consents_withdrawn: revoked.length };
  });

/**
 * `carevault user remove`: the person's sign-in goes (their consents first, so the apps' tokens stop; then their
 * delegations and the user). Their vault and its data stay: they belong to the account, not to the login.
 */
export const userRemove = (config: Config, username: string) =>
  withStore(config, async (s) => {
    const trail = adminAudit(s, config);
    const { revoked } = await withdrawConsents(
      s,
      trail,
      username,
      {},
      {
        outcomeDesc: 'consent withdrawn: the user was removed (carevault user remove)',
      },
    );
    if (!(await s.users.remove(username))) throw new VaultInputError(`user "${username}" not found`);
    await trail.record(userChanged('carevault user remove', EVENT.userRemoved, `${username} removed`));
    return { username, removed: true, consents_withdrawn: revoked.length };
  });

export const userEnable = (config: Config, username: string) =>
  withStore(config, async (s) => {
    const result = await setUserDisabled(s, username, false);
    await adminAudit(s, config).record(userChanged('carevault user enable', EVENT.userEnabled, `${username} enabled`));
    return result;
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
