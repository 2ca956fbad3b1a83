import type { Command } from 'commander';

/** Runs an admin action for the CLI: JSON on stdout, or one line on stderr and exit code 1. */
export type Admin = (fn: () => Promise<unknown>) => Promise<void>;
/** Adds `--data-dir` to a command. */
export type WithDataDir = (cmd: Command) => Command;
