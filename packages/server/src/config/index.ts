import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { DEFAULT_MAX_BYTES_PER_SOURCE, DEFAULT_MAX_RESOURCES_PER_SOURCE } from '@carevault/sdk';
import { LOOPBACK, trustedProxies } from '../http/trusted-proxies.ts';

export interface Config {
  port: number;
  host: string;
  dataDir: string;
  /** Public origin clients use, e.g. https://localhost:8443 (no trailing slash). */
  baseUrl: string;
  databaseUrl: string | undefined;
  /** PostgreSQL connections per node (CAREVAULT_DATABASE_POOL_SIZE); N nodes use N times this many. */
  databasePoolSize: number;
  /**
   * Seconds a PostgreSQL transaction may wait on its node between statements (CAREVAULT_DATABASE_TX_IDLE_TIMEOUT,
   * default 60) before the database ends it: a frozen node then holds up the others' writes that long at most.
   */
  databaseTxIdleTimeout: number;
  /**
   * Seconds a search may run (CAREVAULT_SEARCH_TIMEOUT, default 30; fractions allowed): past it the search is
   * answered 400 `too-costly`. PostgreSQL applies it to each statement of a read; SQLite to a costly search on its
   * search thread.
   */
  searchTimeout: number;
  /**
   * MiB of resource JSON one answer may hold (CAREVAULT_MAX_RESPONSE_MB, default 64): pages end there and go on
   * by their `next` link; a batch or transaction runs no more entries past it.
   */
  maxResponseMb: number;
  /** SQLite: threads for costly searches (CAREVAULT_SEARCH_THREADS, default 2; 0: the server's own thread). */
  searchThreads: number;
  redisUrl: string | undefined;
  /** Access-token lifetime in seconds (CARA uses 300). */
  accessTokenTtl: number;
  /**
   * Name of a header in which a TLS-terminating proxy forwards the client certificate (URL-encoded PEM,
   * as nginx's $ssl_client_escaped_cert). Off unless set: trusting it without such a proxy lets anyone claim any certificate.
   */
  trustedCertHeader: string | undefined;
  /**
   * Addresses and CIDR ranges of the proxies whose X-Forwarded-For and certificate header are believed
   * (http/trusted-proxies.ts). Default: loopback when `trustedCertHeader` is set, else none.
   */
  trustedProxies: string[] | undefined;
  logLevel: string;
  /** Token bucket per client (and per address for unauthenticated calls): `count` requests per `windowMs`. */
  rateLimit: { count: number; windowMs: number };
  /** Prefix of every Redis key, so several deployments can share one Redis. */
  redisPrefix: string;
  /**
   * Whether AuditEvents are written. Always on in a deployment (NEN 7513); `CAREVAULT_AUDIT=off` exists only so
   * the benchmark can measure what auditing costs.
   */
  audit: boolean;
  /**
   * Extra trust anchors (PEM bundle, CAREVAULT_OUTBOUND_CA) for what this server fetches itself: clients'
   * jwks_uri, e.g. a regional viewer's JWKS behind a private CA. The system roots and the platform CA always apply.
   */
  outboundCa: string[];
  /** Zorgviewer sessions: at most this long after the launch, and this long without a request. */
  viewerSession: { maxAgeSeconds: number; idleSeconds: number };
  /** What the web viewer and `viewer query` take of one source per patient query (flags of `viewer query` win). */
  viewerSources: { timeoutMs: number; maxResourcesPerSource: number; maxBytesPerSource: number };
  /** External program server asked before every $submit-data (seed 002); absent = the built-in rule. */
  programServer: string | undefined;
  /** `/directory` answers without a token (seed 003: a network directory anyone may look providers up in). */
  publicDirectory: boolean;
  /** One quality-measure calculation's heap and time in the engine process, and how long an idle one is kept
   * (CAREVAULT_MEASURE_MEMORY_MB, _TIMEOUT, _IDLE). */
  measureLimits: { memoryMb: number; timeoutMs: number; idleMs: number };
  /**
   * Subscriptions (rest-hook): the endpoints they may notify, as URL prefixes (CAREVAULT_SUBSCRIPTION_ENDPOINTS,
   * comma-separated; none by default, so no vault can make this server call out), how often the vaults are
   * looked at (CAREVAULT_SUBSCRIPTION_POLL_MS) and how many failed attempts in a row end a Subscription in
   * `error` (CAREVAULT_SUBSCRIPTION_RETRIES).
   */
  subscriptions: { endpoints: string[]; pollMs: number; retries: number };
  /** Trust communities' CRLs are fetched again from their distribution points this often (0: never). */
  crlRefreshSeconds: number;
}

export interface ConfigInput {
  port?: string | number | undefined;
  host?: string | undefined;
  dataDir?: string | undefined;
  baseUrl?: string | undefined;
  accessTokenTtl?: string | number | undefined;
  trustedCertHeader?: string | undefined;
  trustedProxies?: string | undefined;
  logLevel?: string | undefined;
  rateLimit?: string | undefined;
  programServer?: string | undefined;
  publicDirectory?: boolean | undefined;
}

class ConfigError extends Error {}

function proxyList(raw: string | undefined, certHeader: boolean): string[] | undefined {
  const entries = (raw ?? '')
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean);
  if (entries.length === 0) return certHeader ? [...LOOPBACK] : undefined;
  try {
    trustedProxies(entries);
  } catch (err) {
    throw new ConfigError(`trusted proxies: ${(err as Error).message}`);
  }
  return entries;
}

/** The most a viewer query may be told to take of one source (the CLI's flags are held to the same). */
export const MAX_RESOURCES_PER_SOURCE = 1_000_000;
export const MAX_SOURCE_KB = 4 * 1024 * 1024;

function integer(name: string, value: string | number, min: number, max: number): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`${name} must be an integer between ${min} and ${max}, got "${value}"`);
  }
  return n;
}

/** Seconds, fractions allowed (`30`, `0.5`); used to the millisecond. */
function seconds(name: string, value: string | number, min: number, max: number): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new ConfigError(`${name} must be a number of seconds between ${min} and ${max}, got "${value}"`);
  }
  return n;
}

const WINDOWS: Record<string, number> = { s: 1000, sec: 1000, min: 60_000, h: 3_600_000 };

/** `6000/min`, `100/s`, `50000/h`. */
export function parseRateLimit(value: string): { count: number; windowMs: number } {
  const m = /^\s*(\d{1,9})\s*\/\s*(s|sec|min|h)\s*$/.exec(value);
  if (!m || Number(m[1]) < 1) {
    throw new ConfigError(`rate limit "${value}" must look like <count>/<s|min|h>, e.g. 6000/min`);
  }
  return { count: Number(m[1]), windowMs: WINDOWS[m[2] as string] as number };
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function logLevel(value: string): string {
  if (!LOG_LEVELS.includes(value)) {
    throw new ConfigError(`CAREVAULT_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got "${value}"`);
  }
  return value;
}

/**
 * An IP address or a host name (RFC 1123). Checked before the dev PKI puts it into the server certificate:
 * `999.1.1.1` would otherwise fail deep inside the certificate code.
 */
function listenHost(value: string): string {
  const name =
    /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
  if (isIP(value) || (name.test(value) && !/^[\d.]+$/.test(value))) return value;
  throw new ConfigError(`--host / CAREVAULT_HOST "${value}" is neither an IP address nor a host name`);
}

/** Flags win over CAREVAULT_* environment variables, which win over defaults. */
export function loadConfig(flags: ConfigInput = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const port = integer('port', flags.port ?? env.CAREVAULT_PORT ?? 8443, 0, 65535);
  const host = listenHost(flags.host ?? env.CAREVAULT_HOST ?? '127.0.0.1');
  const dataDir = resolve(flags.dataDir ?? env.CAREVAULT_DATA_DIR ?? 'data');
  const rawBase = flags.baseUrl ?? env.CAREVAULT_BASE_URL ?? `https://localhost:${port}`;
  let base: URL;
  try {
    base = new URL(rawBase);
  } catch {
    throw new ConfigError(`base URL "${rawBase}" is not an absolute URL`);
  }
  if (base.protocol !== 'https:') throw new ConfigError('base URL must use https (OAuth issuers are https)');
  if (base.search || base.hash) throw new ConfigError('base URL must not have a query or fragment');
  const accessTokenTtl = integer(
    'access token TTL',
    flags.accessTokenTtl ?? env.CAREVAULT_ACCESS_TOKEN_TTL ?? 300,
    30,
    3600,
  );
  const header = flags.trustedCertHeader ?? env.CAREVAULT_TRUSTED_CERT_HEADER;
  return {
    port,
    host,
    dataDir,
    baseUrl: base.href.replace(/\/$/, ''),
    databaseUrl: env.CAREVAULT_DATABASE_URL || undefined,
    databasePoolSize: integer('CAREVAULT_DATABASE_POOL_SIZE', env.CAREVAULT_DATABASE_POOL_SIZE || 10, 2, 500),
    databaseTxIdleTimeout: integer(
      'CAREVAULT_DATABASE_TX_IDLE_TIMEOUT',
      env.CAREVAULT_DATABASE_TX_IDLE_TIMEOUT || 60,
      1,
      3600,
    ),
    searchTimeout: seconds('CAREVAULT_SEARCH_TIMEOUT', env.CAREVAULT_SEARCH_TIMEOUT || 30, 0.01, 3600),
    maxResponseMb: integer('CAREVAULT_MAX_RESPONSE_MB', env.CAREVAULT_MAX_RESPONSE_MB || 64, 1, 256),
    searchThreads: integer('CAREVAULT_SEARCH_THREADS', env.CAREVAULT_SEARCH_THREADS || 2, 0, 64),
    redisUrl: env.CAREVAULT_REDIS_URL || undefined,
    accessTokenTtl,
    trustedCertHeader: header ? header.toLowerCase() : undefined,
    trustedProxies: proxyList(flags.trustedProxies ?? env.CAREVAULT_TRUSTED_PROXIES, Boolean(header)),
    logLevel: logLevel(flags.logLevel ?? env.CAREVAULT_LOG_LEVEL ?? 'info'),
    rateLimit: parseRateLimit(flags.rateLimit ?? env.CAREVAULT_RATE_LIMIT ?? '6000/min'),
    redisPrefix: env.CAREVAULT_REDIS_PREFIX || 'carevault:',
    audit: auditSetting(env.CAREVAULT_AUDIT),
    outboundCa: pemBundle('CAREVAULT_OUTBOUND_CA', env.CAREVAULT_OUTBOUND_CA),
    programServer: programServerUrl(flags.programServer ?? env.CAREVAULT_PROGRAM_SERVER),
    measureLimits: {
      memoryMb: integer('CAREVAULT_MEASURE_MEMORY_MB', env.CAREVAULT_MEASURE_MEMORY_MB || 1024, 64, 65_536),
      timeoutMs: integer('CAREVAULT_MEASURE_TIMEOUT', env.CAREVAULT_MEASURE_TIMEOUT || 300, 1, 86_400) * 1000,
      idleMs: integer('CAREVAULT_MEASURE_IDLE', env.CAREVAULT_MEASURE_IDLE || 300, 1, 86_400) * 1000,
    },
    subscriptions: {
      endpoints: endpointPrefixes(env.CAREVAULT_SUBSCRIPTION_ENDPOINTS),
      pollMs: integer('CAREVAULT_SUBSCRIPTION_POLL_MS', env.CAREVAULT_SUBSCRIPTION_POLL_MS || 1000, 50, 60_000),
      retries: integer('CAREVAULT_SUBSCRIPTION_RETRIES', env.CAREVAULT_SUBSCRIPTION_RETRIES || 10, 0, 100),
    },
    crlRefreshSeconds: integer('CAREVAULT_CRL_REFRESH_SECONDS', env.CAREVAULT_CRL_REFRESH_SECONDS || 3600, 0, 86_400),
    publicDirectory:
      flags.publicDirectory ?? onOff('CAREVAULT_PUBLIC_DIRECTORY', env.CAREVAULT_PUBLIC_DIRECTORY, false),
    viewerSession: {
      maxAgeSeconds: integer(
        'CAREVAULT_VIEWER_SESSION_TTL',
        env.CAREVAULT_VIEWER_SESSION_TTL || 8 * 3600,
        60,
        7 * 86400,
      ),
      idleSeconds: integer('CAREVAULT_VIEWER_IDLE_TIMEOUT', env.CAREVAULT_VIEWER_IDLE_TIMEOUT || 1800, 30, 86400),
    },
    viewerSources: {
      timeoutMs: Math.round(
        seconds('CAREVAULT_VIEWER_SOURCE_TIMEOUT', env.CAREVAULT_VIEWER_SOURCE_TIMEOUT || 10, 0.1, 600) * 1000,
      ),
      maxResourcesPerSource: integer(
        'CAREVAULT_VIEWER_MAX_RESOURCES',
        env.CAREVAULT_VIEWER_MAX_RESOURCES || DEFAULT_MAX_RESOURCES_PER_SOURCE,
        1,
        MAX_RESOURCES_PER_SOURCE,
      ),
      maxBytesPerSource:
        integer(
          'CAREVAULT_VIEWER_MAX_SOURCE_KB',
          env.CAREVAULT_VIEWER_MAX_SOURCE_KB || DEFAULT_MAX_BYTES_PER_SOURCE / 1024,
          1,
          MAX_SOURCE_KB,
        ) * 1024,
    },
  };
}

function onOff(name: string, value: string | undefined, fallback: boolean): boolean {
  if (value === undefined || value === '') return fallback;
  if (/^(1|true|on|yes)$/i.test(value)) return true;
  if (/^(0|false|off|no)$/i.test(value)) return false;
  throw new ConfigError(`${name} must be on or off, got "${value}"`);
}

function endpointPrefixes(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '')
    .map((v) => {
      let url: URL;
      try {
        url = new URL(v);
      } catch {
        throw new ConfigError(`CAREVAULT_SUBSCRIPTION_ENDPOINTS: "${v}" is not an absolute URL`);
      }
      if (url.protocol !== 'https:' && url.protocol !== 'http:')
        throw new ConfigError(`CAREVAULT_SUBSCRIPTION_ENDPOINTS: "${v}" is not an http(s) URL`);
      if (url.username || url.password || url.search || url.hash)
        throw new ConfigError(
          `CAREVAULT_SUBSCRIPTION_ENDPOINTS: "${v}" must be a URL prefix without credentials, query or fragment`,
        );
      return url.href;
    });
}

function programServerUrl(value: string | undefined): string | undefined {
  if (!value) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`CAREVAULT_PROGRAM_SERVER / --program-server is not a URL: ${value}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ConfigError('CAREVAULT_PROGRAM_SERVER / --program-server must be an http(s) URL');
  }
  if (url.username || url.password) {
    throw new ConfigError('CAREVAULT_PROGRAM_SERVER / --program-server must not carry credentials');
  }
  return url.href;
}

function pemBundle(name: string, path: string | undefined): string[] {
  if (!path) return [];
  if (!existsSync(path)) throw new ConfigError(`${name}: file not found: ${path}`);
  const pems = readFileSync(path, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!pems) throw new ConfigError(`${name}: ${path} holds no PEM certificate`);
  return pems;
}

function auditSetting(value: string | undefined): boolean {
  if (value === undefined || value === '' || value === 'on') return true;
  if (value === 'off') return false;
  throw new ConfigError(`CAREVAULT_AUDIT must be "on" or "off", got "${value}"`);
}

export { ConfigError };

/** Written by `serve` so that admin commands print URLs of the running server, not of the default port. */
export const SERVER_INFO_FILE = 'server.json';

/**
 * Configuration for admin commands: like `loadConfig`, but without an explicit base URL or port the base URL
 * is the one the server last started with on this data directory (so `launch create` prints the right `iss`).
 */
export function adminConfig(flags: ConfigInput = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const config = loadConfig(flags, env);
  if (flags.baseUrl ?? env.CAREVAULT_BASE_URL ?? flags.port ?? env.CAREVAULT_PORT) return config;
  const file = join(config.dataDir, SERVER_INFO_FILE);
  if (!existsSync(file)) return config;
  try {
    const info = JSON.parse(readFileSync(file, 'utf8')) as { baseUrl?: unknown };
    if (typeof info.baseUrl === 'string' && /^https:\/\/[^?#]+$/.test(info.baseUrl)) {
      return { ...config, baseUrl: info.baseUrl.replace(/\/$/, '') };
    }
  } catch {
    // An unreadable note is ignored: the defaults apply, as before the server ever ran.
  }
  return config;
}
