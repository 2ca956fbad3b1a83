import type { Command } from 'commander';
import { adminConfig } from '../config/index.ts';
import type { Admin, WithDataDir } from './command-types.ts';
import {
  userAdd,
  userDelegate,
  userDisable,
  userEnable,
  userList,
  userPassword,
  userRemove,
  userRevoke,
  userUndelegate,
} from './people.ts';

/** `carevault user …`: the people who sign in to apps — add, delegate, password, disable/enable, revoke, list. */
export function userCommands(
  program: Command,
  admin: Admin,
  dataDir: WithDataDir,
  readStdin: () => Promise<string>,
): void {
  const user = program.command('user').description('people who sign in to apps (SMART app launch)');
  dataDir(
    user
      .command('add <username>')
      .description('add a user; prints {username, partition, fhirUser}')
      .option('--password <password>', 'the password (at least 8 characters; prefer --password-stdin)')
      .option('--password-stdin', 'read the password from standard input')
      .option('--account <urn>', "the user's own account (urn:cara:account:<id> or partition name)")
      .option('--fhir-user <ref>', "the user's own record, e.g. Patient/123 or Practitioner/abc"),
  ).action((username: string, o) => admin(() => userAdd(adminConfig(o), username, o, readStdin)));
  dataDir(
    user
      .command('delegate <username>')
      .description(
        'let a user act for a patient of another account (a proxy); the consent page then offers that patient',
      )
      .requiredOption('--account <urn>', 'the account (urn:cara:account:<id> or partition name) of the patient')
      .requiredOption('--patient <id>', 'the Patient id in that vault')
      .option('--scope <scopes>', 'SMART system scopes bounding the delegate (default "system/*.rs")'),
  ).action((username: string, o) => admin(() => userDelegate(adminConfig(o), username, o)));
  dataDir(
    user
      .command('undelegate <username>')
      .description('end a delegation: the user no longer acts for that patient, and their tokens for it stop at once')
      .requiredOption('--account <urn>', 'the account (urn:cara:account:<id> or partition name) of the patient')
      .requiredOption('--patient <id>', 'the Patient id in that vault'),
  ).action((username: string, o) => admin(() => userUndelegate(adminConfig(o), username, o)));
  dataDir(
    user
      .command('revoke <username>')
      .description("withdraw a user's consents: the apps' refresh and access tokens stop working at once")
      .option('--client <client_id>', 'only the consent given to this app'),
  ).action((username: string, o) => admin(() => userRevoke(adminConfig(o), username, o)));
  dataDir(
    user
      .command('password <username>')
      .description('set a new password (the old one stops working at once)')
      .option('--password <password>', 'the password (at least 8 characters; prefer --password-stdin)')
      .option('--password-stdin', 'read the password from standard input'),
  ).action((username: string, o) => admin(() => userPassword(adminConfig(o), username, o, readStdin)));
  dataDir(
    user
      .command('disable <username>')
      .description("refuse the user's sign-ins and withdraw every consent: the apps' tokens stop at once"),
  ).action((username: string, o) => admin(() => userDisable(adminConfig(o), username)));
  dataDir(
    user
      .command('remove <username>')
      .description("remove a user's sign-in: consents withdrawn (tokens stop), delegations ended; their vault stays"),
  ).action((username: string, o) => admin(() => userRemove(adminConfig(o), username)));
  dataDir(user.command('enable <username>').description('let a disabled user sign in again')).action(
    (username: string, o) => admin(() => userEnable(adminConfig(o), username)),
  );
  dataDir(user.command('list').description('list users (never passwords)')).action((o) =>
    admin(() => userList(adminConfig(o))),
  );
}
