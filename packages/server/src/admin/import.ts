import { existsSync } from 'node:fs';
import { SingleBar } from 'cli-progress';
import type { Config } from '../config/index.ts';
import { ImportError, importFiles } from '../fhir/import.ts';
import { stampIfEmpty } from '../fhir/search/reindex.ts';
import { openStore } from '../store/index.ts';
import { VaultInputError } from '../vault/partitions.ts';
import { operatorContext } from './operator.ts';

const SWEEP_INTERVAL_MS = 5000;

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
    await stampIfEmpty(store);
    const ctx = operatorContext(store, config, partition, 'carevault-import');
    let done = 0;
    let swept = 0;
    // The server's upkeep, as the server does it: PostgreSQL keeps planning the import's own lookups with the
    // statistics of the empty tables it started on (75 resources/s after 130,000, 2,400 once analyzed).
    const upkeep = async () => {
      await store.sweep(Math.floor(Date.now() / 1000));
      swept = Date.now();
    };
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
      async committed() {
        if (Date.now() - swept >= SWEEP_INTERVAL_MS) await upkeep();
      },
    });
    // At the end, statistics of everything loaded: the sweep's rule (a table that doubled) could leave the
    // planner thinking a vault is half its size, and the vault is searched next with what is left here.
    await store.sweep(Math.floor(Date.now() / 1000));
    await store.analyze();
    return report;
  } catch (err) {
    if (err instanceof ImportError) throw new VaultInputError(err.message);
    throw err;
  } finally {
    if (started) bar.stop();
    await store.close();
  }
}
