import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { AuditWho } from '../audit/balp.ts';
import type { AuditTrail } from '../audit/trail.ts';
import { parseSmartScope } from '../auth/smart-scopes.ts';
import { StoreTimeoutError } from '../store/errors.ts';
import type { Store } from '../store/types.ts';
import type { VaultAccess } from '../vault/policy.ts';
import type { FhirContext } from './context.ts';
import { FhirError, operationOutcome, storeErrorAsFhir } from './errors.ts';
import { claimLock } from './file-lock.ts';

/** An accepted asynchronous submission may be this large; the synchronous limit stays FHIR_BODY_LIMIT. */
export const ASYNC_BODY_LIMIT = 256 * 1024 * 1024;
const HEARTBEAT_MS = 5_000;
const STALE_MS = 30_000;
/**
 * Jobs a node runs at once: a second one, so that a small export or submission does not wait behind a large
 * one (each streams page by page, so two hold little memory); more would only share the same two cores.
 */
export const JOB_WORKERS = 2;
const JOB_ID_RE = /^[0-9a-f-]{36}$/;

/** A VaultAccess as JSON: its scopes by their text. */
export type StoredAccess = Omit<VaultAccess, 'tokenScopes' | 'grantScopes'> & {
  tokenScopes: string[];
  grantScopes: string[];
};

export const storeAccess = (a: VaultAccess): StoredAccess => ({
  ...a,
  tokenScopes: a.tokenScopes.map((s) => s.raw),
  grantScopes: a.grantScopes.map((s) => s.raw),
});

export const loadAccess = (a: StoredAccess): VaultAccess => ({
  ...a,
  tokenScopes: a.tokenScopes.flatMap((raw) => parseSmartScope(raw) ?? []),
  grantScopes: a.grantScopes.flatMap((raw) => parseSmartScope(raw) ?? []),
});

/** What a job needs to run later, on this node or another, after a restart: never the token itself. */
export interface AsyncJob {
  id: string;
  partition: string;
  base: string;
  access: StoredAccess;
  who: AuditWho;
  acceptedAt: string;
  state: 'queued' | 'in-progress' | 'completed' | 'failed';
  /** When done: the answer the status URL gives. */
  result?: { status: number; body: string; provenance?: string | undefined } | undefined;
}

/** Whether the caller is who started the job: the same client (and person) in the same vault. */
export const ownedBy = (job: AsyncJob, ctx: FhirContext): boolean =>
  job.partition === ctx.partition &&
  job.access.clientId === ctx.access.clientId &&
  job.who.user?.id === ctx.who.user?.id;

/** The context a job acts in: the vault, access and caller of the request that started it. */
export const jobContext = (job: AsyncJob, store: Store, audit: AuditTrail): FhirContext => ({
  store,
  partition: job.partition,
  base: job.base,
  access: loadAccess(job.access),
  who: job.who,
  audit,
});

/** An asynchronous $submit-data. */
export interface SubmissionJob extends AsyncJob {
  measureId: string | undefined;
  provenance: Record<string, unknown> | undefined;
  /** Resources in the submission, once it was read. */
  resources?: number | undefined;
}

/** Counts bytes on their way to disk and stops the upload past `limit`. */
function limitTo(limit: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > limit) {
        done(new FhirError(413, 'too-costly', `an asynchronous request may be at most ${limit} bytes`));
        return;
      }
      done(null, chunk);
    },
  });
}

/**
 * Asynchronous jobs (Prefer: respond-async: $submit-data, $export) as files in a directory under
 * `<data-dir>/jobs/`, which every node mounts: the body is streamed to disk as it arrives, the job survives a
 * restart, and any node answers its status. A node claims a job with an exclusive lock file it keeps fresh; a
 * lock left stale by a dead node is taken over by renaming it (atomic, so exactly one node wins). What a job
 * writes besides its answer goes to `outputDir(id)`, removed with the job.
 */
export class AsyncJobs<J extends AsyncJob> {
  private readonly node = randomUUID();
  private active = 0;
  private again = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly dir: string,
    private readonly execute: (job: J, body: string, update: (j: J) => Promise<void>) => Promise<J['result']>,
    private readonly log: { error(o: object, msg: string): void },
    private readonly workers = JOB_WORKERS,
  ) {}

  private file = (id: string, kind: 'job' | 'body' | 'lock' | 'poll') =>
    join(this.dir, `${id}.${kind}${kind === 'lock' || kind === 'poll' ? '' : '.json'}`);

  /** Where a job keeps its output files. */
  outputDir = (id: string) => join(this.dir, `${id}.out`);

  async accept(job: Omit<J, 'id' | 'state' | 'acceptedAt'>, body: NodeJS.ReadableStream): Promise<J> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const id = randomUUID();
    const partial = join(this.dir, `${id}.upload`);
    try {
      await pipeline(body, limitTo(ASYNC_BODY_LIMIT), createWriteStream(partial, { mode: 0o600 }));
      await rename(partial, this.file(id, 'body'));
    } catch (err) {
      await rm(partial, { force: true });
      throw err;
    }
    const full = { ...job, id, state: 'queued', acceptedAt: new Date().toISOString() } as J;
    await this.save(full);
    this.kick();
    return full;
  }

  async get(id: string): Promise<J | undefined> {
    if (!JOB_ID_RE.test(id)) return undefined;
    try {
      return JSON.parse(await readFile(this.file(id, 'job'), 'utf8')) as J;
    } catch {
      return undefined;
    }
  }

  /** Forgets a job and its output; one that is running finishes its work and then removes what it wrote. */
  async remove(id: string): Promise<void> {
    if (!JOB_ID_RE.test(id)) return;
    await rm(this.file(id, 'job'), { force: true });
    await rm(this.file(id, 'body'), { force: true });
    await rm(this.file(id, 'poll'), { force: true });
    await rm(this.outputDir(id), { recursive: true, force: true });
  }

  /**
   * Milliseconds until the job's status may be asked again: 0 when the last poll (on any node: the time is the
   * mtime of a file beside the job) was at least `intervalMs` ago, and this poll is then the last one.
   */
  async untilNextPoll(id: string, intervalMs: number): Promise<number> {
    const file = this.file(id, 'poll');
    const last = (await stat(file).catch(() => undefined))?.mtimeMs;
    const now = Date.now();
    // A clock of another node ahead of this one never makes the wait longer than one interval.
    if (last !== undefined && now - last < intervalMs) return Math.min(intervalMs, intervalMs - (now - last));
    await writeFile(file, '', { mode: 0o600 });
    await utimes(file, now / 1000, now / 1000);
    return 0;
  }

  /** Every job in the directory. */
  async list(): Promise<J[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const jobs: J[] = [];
    for (const n of names.filter((n) => n.endsWith('.job.json'))) {
      const job = await this.get(n.slice(0, -'.job.json'.length));
      if (job) jobs.push(job);
    }
    return jobs;
  }

  /**
   * Removes a job. One that no node has started is cancelled: its lock is taken first, so that none starts it
   * meanwhile. Of one that runs or ran, only the record goes (see `remove`).
   */
  async cancel(id: string): Promise<'cancelled' | 'removed'> {
    const notStarted = (await this.get(id))?.state === 'queued' && (await this.claim(id));
    await this.remove(id);
    if (notStarted) await rm(this.file(id, 'lock'), { force: true });
    return notStarted ? 'cancelled' : 'removed';
  }

  /** Removes the finished jobs accepted longer than `retentionMs` ago; returns the jobs that are left. */
  async sweep(retentionMs: number): Promise<J[]> {
    const now = Date.now();
    const kept: J[] = [];
    for (const job of await this.list()) {
      const finished = job.state === 'completed' || job.state === 'failed';
      if (finished && now - Date.parse(job.acceptedAt) > retentionMs) await this.remove(job.id);
      else kept.push(job);
    }
    return kept;
  }

  /** Starts working through the queue now, and every few seconds for jobs whose node died. */
  start(): void {
    this.kick();
    this.timer = setInterval(() => this.kick(), STALE_MS / 2);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
  }

  private async save(job: J): Promise<void> {
    const tmp = `${this.file(job.id, 'job')}.${this.node}`;
    await writeFile(tmp, JSON.stringify(job), { mode: 0o600 });
    await rename(tmp, this.file(job.id, 'job'));
  }

  private kick(): void {
    if (this.stopped) return;
    // A kick while every worker is busy (a job accepted just as a loop found nothing) is not lost: a loop runs
    // again when one ends.
    if (this.active >= this.workers) {
      this.again = true;
      return;
    }
    this.active++;
    this.again = false;
    void this.drain()
      .catch((err) => this.log.error({ err: { message: (err as Error).message } }, 'asynchronous jobs'))
      .finally(() => {
        this.active--;
        if (this.again) this.kick();
      });
  }

  private async drain(): Promise<void> {
    for (;;) {
      // Oldest first, so that a job is never passed over for ever by those accepted after it.
      const waiting = (await this.list())
        .filter((j) => j.state !== 'completed' && j.state !== 'failed')
        .sort((a, b) => a.acceptedAt.localeCompare(b.acceptedAt) || a.id.localeCompare(b.id));
      let claimed: J | undefined;
      for (const job of waiting) {
        if (!(await this.claim(job.id))) continue;
        // Read again under the lock: the node that ran it may have finished and let go of it since the list.
        const now = await this.get(job.id);
        if (now && now.state !== 'completed' && now.state !== 'failed') {
          claimed = now;
          break;
        }
        await rm(this.file(job.id, 'lock'), { force: true });
      }
      if (!claimed) return;
      if (this.stopped) {
        await rm(this.file(claimed.id, 'lock'), { force: true });
        return;
      }
      await this.run(claimed);
    }
  }

  private claim(id: string): Promise<boolean> {
    return claimLock(this.file(id, 'lock'), this.node, STALE_MS);
  }

  private async run(job: J): Promise<void> {
    const lock = this.file(job.id, 'lock');
    const beat = setInterval(() => void utimes(lock, new Date(), new Date()).catch(() => {}), HEARTBEAT_MS);
    try {
      let current: J = { ...job, state: 'in-progress' };
      await this.save(current);
      let result: SubmissionJob['result'];
      try {
        const body = await readFile(this.file(job.id, 'body'), 'utf8');
        result = await this.execute(current, body, async (j) => {
          current = j;
          if (await this.get(j.id)) await this.save(j);
        });
      } catch (thrown) {
        // A search past its time fails the job for good; an unreachable database leaves it to be run again.
        const err = thrown instanceof StoreTimeoutError ? storeErrorAsFhir(thrown) : thrown;
        if (!(err instanceof FhirError)) throw err;
        result = { status: err.status, body: JSON.stringify(operationOutcome('error', err.code, err.diagnostics)) };
      }
      const status = result?.status ?? 500;
      // A job removed while it ran (an export cancelled by DELETE) stays removed, with what it wrote.
      if (await this.get(job.id)) await this.save({ ...current, state: status < 300 ? 'completed' : 'failed', result });
      else await this.remove(job.id);
      await rm(this.file(job.id, 'body'), { force: true });
    } finally {
      clearInterval(beat);
      await rm(lock, { force: true });
    }
  }
}
