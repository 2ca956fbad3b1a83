import { existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import { SingleBar } from 'cli-progress';
import { AuditTrail } from '../audit/trail.ts';
import { parseSmartScope, type SmartScope } from '../auth/smart-scopes.ts';
import type { Config } from '../config/index.ts';
import { ImportError, importFiles } from '../fhir/import.ts';
import { openStore } from '../store/index.ts';
import { VaultInputError } from '../vault/partitions.ts';

/** `carevault import <files…> --partition P`: the operator loads data directly, with a progress bar on stderr. */
export async function importCommand(config: Config, files: string[], partition: string) {
  if (files.length === 0) throw new VaultInputError('give at least one file');
  for (const f of files) if (!existsSync(f)) throw new VaultInputError(`file not found: ${f}`);
  const store = await openStore({ dataDir: config.dataDir, databaseUrl: config.databaseUrl });
  const bar = new SingleBar({
    format: ' {file} [{bar}] {value} resources',
    stream: process.stderr,
    hideCursor: true,
    noTTYOutput: false,
    notTTYSchedule: 5000,
  });
  let started = false;
  try {
    if (!(await store.partitions.get(partition))) throw new VaultInputError(`partition "${partition}" not found`);
    // The operator acts with full rights on the vault; nothing here goes through a token.
    const all = parseSmartScope('system/*.cruds') as SmartScope;
    const ctx = {
      store,
      partition,
      base: `${config.baseUrl}/fhir/${partition}`,
      access: { partition, clientId: 'carevault-import', tokenScopes: [all], grantScopes: [all], person: false },
      who: { clientId: 'carevault-import', user: { id: userInfo().username } },
      audit: new AuditTrail(store, config.audit, config.baseUrl, {
        error: (_obj: object, msg: string) => {
          process.stderr.write(`error: ${msg}\n`);
        },
      }),
    };
    let done = 0;
    const report = await importFiles(ctx, files, {
      fileStarted(file) {
        if (!started) {
          bar.start(0, 0, { file });
          started = true;
        }
        bar.update(done, { file: file.split('/').pop() });
      },
      resourcesDone(n) {
        done += n;
        bar.setTotal(done);
        bar.update(done);
      },
    });
    return report;
  } catch (err) {
    if (err instanceof ImportError) throw new VaultInputError(err.message);
    throw err;
  } finally {
    if (started) bar.stop();
    await store.close();
  }
}
