import type { Config } from '../config/index.ts';
import { addDirectoryEntry } from '../directory/entries.ts';
import { withStore } from './vault.ts';

export const directoryAdd = (config: Config, o: { orgOid: string; name: string; fhirBase: string }) =>
  withStore(config, (store) => addDirectoryEntry(store, config, o));
