// The README's test command: the whole suite on the embedded SQLite store, then again on PostgreSQL when
// CAREVAULT_TEST_DATABASE_URL is set (in a database of its own, created here and dropped afterwards).
// Prints the TAP of both runs and, last, the combined "# tests / # pass / # fail" lines CI reads.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

const root = new URL('..', import.meta.url).pathname;
// Explicit file lists: `node --test` finds no .ts files on its own on Node 20.
const files = ['packages/server/test', 'packages/sdk/test'].flatMap((dir) =>
  readdirSync(join(root, dir))
    .filter((f) => f.endsWith('.test.ts'))
    .sort()
    .map((f) => join(dir, f)),
);
const only = process.argv.slice(2);
const selected = only.length ? files.filter((f) => only.some((o) => f.includes(o))) : files;
// Two files at a time even on two cores (node's default there is one): most files wait on servers, child
// processes and a browser, so the suite takes about a quarter less time. CAREVAULT_TEST_CONCURRENCY=1 runs
// the files one after another (to chase a test that only fails beside another).
const concurrency = Number(process.env.CAREVAULT_TEST_CONCURRENCY) || Math.max(2, availableParallelism() - 1);

function suite(label, env) {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=tap', ...selected],
      {
        cwd: root,
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const counts = { tests: 0, pass: 0, fail: 0 };
    let tail = '';
    child.stdout.on('data', (chunk) => {
      process.stdout.write(chunk);
      tail = (tail + chunk).slice(-4096);
    });
    child.on('exit', (code) => {
      for (const key of Object.keys(counts)) {
        const m = tail.match(new RegExp(`^# ${key} (\\d+)`, 'm'));
        counts[key] = m ? Number(m[1]) : 0;
      }
      process.stdout.write(`# store ${label}: ${counts.pass} passed, ${counts.fail} failed\n`);
      resolve({ ...counts, ok: code === 0 });
    });
  });
}

const results = [await suite('sqlite', { CAREVAULT_TEST_STORE: 'sqlite' })];

const base = process.env.CAREVAULT_TEST_DATABASE_URL;
if (base) {
  const name = `carevault_test_${process.pid}_${Date.now()}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(base);
  url.pathname = `/${name}`;
  try {
    results.push(
      await suite('postgres', {
        CAREVAULT_TEST_STORE: 'postgres',
        CAREVAULT_TEST_DATABASE_URL: url.href,
      }),
    );
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}

const sum = (k) => results.reduce((n, r) => n + r[k], 0);
process.stdout.write(`# tests ${sum('tests')}\n# pass ${sum('pass')}\n# fail ${sum('fail')}\n`);
process.exitCode = results.every((r) => r.ok) ? 0 : 1;
