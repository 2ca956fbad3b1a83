import { createHash } from 'node:crypto';
import { hostname, userInfo } from 'node:os';
import pg from 'pg';
import { StoreTimeoutError, StoreUnavailableError } from '../errors.ts';

/** Where to connect: the URL as pg takes it, plus carevault's own `schema` parameter. */
export interface PgTarget {
  connectionString: string;
  schema: string;
  /** The URL without its password, for messages. */
  display: string;
}

const SCHEMA = /^[a-z_][a-z0-9_]{0,62}$/;

export function parseDatabaseUrl(url: string): PgTarget {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error('CAREVAULT_DATABASE_URL is not a URL (expected postgres://user@host:5432/database)');
  }
  const schema = u.searchParams.get('schema') ?? 'public';
  if (!SCHEMA.test(schema)) {
    throw new Error(`the schema "${schema}" in CAREVAULT_DATABASE_URL must be lower-case letters, digits and _`);
  }
  u.searchParams.delete('schema');
  // As libpq: without a user in the URL or PGUSER, the operating-system user connects.
  if (!u.username && !process.env.PGUSER) u.username = encodeURIComponent(userInfo().username);
  const display = new URL(u.href);
  if (display.password) display.password = '';
  return { connectionString: u.href, schema, display: display.href };
}

// bigint (epoch seconds and milliseconds, audit seq, counts) fits a JS number well below 2^53.
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === 20
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

/**
 * How long a transaction may wait on its node between statements before PostgreSQL ends its session (ms).
 * Writers hold the write lock of every node for their whole transaction: a node that stops answering inside
 * one (frozen, paused, cut off) must not stall the writes of all the others until TCP gives up, which takes
 * minutes to hours. Its transaction is rolled back; it had acknowledged nothing of it.
 */
export const IDLE_TRANSACTION_TIMEOUT_MS = 60_000;

/** How every connection starts; `settings`: more `name=value` session settings. */
function connectionConfig(
  target: PgTarget,
  settings: string[] = [],
  idleTransactionMs = IDLE_TRANSACTION_TIMEOUT_MS,
): pg.ClientConfig {
  return {
    connectionString: target.connectionString,
    types,
    options: [
      `search_path=${target.schema}`,
      'jit=off',
      `idle_in_transaction_session_timeout=${idleTransactionMs}`,
      ...settings,
    ]
      .map((s) => `-c ${s}`)
      .join(' '),
    connectionTimeoutMillis: 5000,
    // Which node a session belongs to, in pg_stat_activity and pg_locks (who holds the write lock).
    application_name: `carevault ${hostname()} ${process.pid}`,
    // A database that vanished without closing the connection (host down, network cut) is noticed by the
    // operating system's keepalive probes rather than never, for connections that sit idle in the pool.
    keepAlive: true,
  };
}

/** A connection of its own, outside the pools (for LISTEN). */
export function newClient(target: PgTarget): pg.Client {
  return new pg.Client(connectionConfig(target));
}

export function createPool(
  target: PgTarget,
  max: number,
  settings: string[] = [],
  idleTransactionMs = IDLE_TRANSACTION_TIMEOUT_MS,
): pg.Pool {
  const pool = new pg.Pool({
    ...connectionConfig(target, settings, idleTransactionMs),
    max,
    idleTimeoutMillis: 30_000,
  });
  // An idle connection dropped by the server (restart, failover) must not take the process down;
  // the pool opens a new one on the next checkout.
  pool.on('error', () => {});
  return pool;
}

/** `?` placeholders (shared SQL) to PostgreSQL's `$n`. */
export function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

/** PostgreSQL text cannot hold NUL; hostile input with one is stored and searched with U+FFFD instead. */
export function clean(params: unknown[]): unknown[] {
  return params.map((p) => {
    if (typeof p === 'string') return p.includes('\0') ? p.replaceAll('\0', '\uFFFD') : p;
    if (Array.isArray(p)) return clean(p);
    return p;
  });
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN']);

/** Whether an error means "the database is not reachable now" rather than "this query is wrong". */
export function isConnectionError(err: unknown): boolean {
  const e = err as { code?: string; message?: string } | undefined;
  if (!e) return false;
  if (e.code && CONNECTION_CODES.has(e.code)) return true;
  // 08: connection exception; 57P01-03: shutdown / cannot connect now; 53300: too many connections;
  // 25P03: the session was ended for waiting too long inside a transaction (IDLE_TRANSACTION_TIMEOUT_MS).
  if (e.code && (/^08/.test(e.code) || /^57P0[1-3]$/.test(e.code) || e.code === '53300' || e.code === '25P03')) {
    return true;
  }
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|not queryable/i.test(
    e.message ?? '',
  );
}

/** Rethrows connection failures as StoreUnavailableError (a 503 for the client), other errors as they are. */
export function rethrow(err: unknown): never {
  if (isConnectionError(err)) throw new StoreUnavailableError('the database is not reachable', { cause: err });
  // 57014 is also a cancel by hand (pg_cancel_backend); only the read pool's statement_timeout is a cost.
  const e = err as { code?: string; message?: string };
  if (e.code === '57014' && /statement timeout/.test(e.message ?? '')) {
    throw new StoreTimeoutError('the search ran longer than its time', { cause: err });
  }
  throw err;
}

const preparedNames = new Map<string, string>();

/**
 * The query config of one statement. `prepared`: a fixed statement of a hot path, prepared once per connection
 * under a name derived from its text, so PostgreSQL neither parses nor plans it again (≈ 70 µs a statement
 * here). Only for fixed texts: every distinct text stays prepared on every connection.
 */
function config(sql: string, params: unknown[], prepared: boolean): pg.QueryConfig {
  const text = numbered(sql);
  if (!prepared) return { text, values: clean(params) };
  let name = preparedNames.get(sql);
  if (!name) {
    name = `cv_${createHash('sha256').update(sql).digest('hex').slice(0, 20)}`;
    preparedNames.set(sql, name);
  }
  return { name, text, values: clean(params) };
}

/** One statement on any pooled connection (no transaction). */
export async function run<T>(
  pool: pg.Pool | pg.PoolClient,
  sql: string,
  params: unknown[] = [],
  options: { prepared?: boolean } = {},
): Promise<T[]> {
  try {
    const r = await pool.query(config(sql, params, options.prepared === true));
    return r.rows as T[];
  } catch (err) {
    return rethrow(err);
  }
}

export async function runCount(
  pool: pg.Pool | pg.PoolClient,
  sql: string,
  params: unknown[] = [],
  options: { prepared?: boolean } = {},
): Promise<number> {
  try {
    const r = await pool.query(config(sql, params, options.prepared === true));
    return r.rowCount ?? 0;
  } catch (err) {
    return rethrow(err);
  }
}

const listened = new WeakSet<pg.PoolClient>();

/** A checked-out connection; `release(true)` discards it (it may be broken or mid-transaction). */
export async function checkout(pool: pg.Pool): Promise<pg.PoolClient> {
  try {
    const client = await pool.connect();
    // A connection the server ends between two statements of a checked-out client (a restart, the idle
    // transaction timeout) emits 'error' on the client, which without a listener takes the process down. The
    // next statement on it then fails as a connection error (a 503), and its holder releases it as broken.
    if (!listened.has(client)) {
      listened.add(client);
      client.on('error', () => {});
    }
    return client;
  } catch (err) {
    return rethrow(err);
  }
}
