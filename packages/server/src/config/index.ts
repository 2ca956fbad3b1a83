import { resolve } from 'node:path';

export interface Config {
  port: number;
  host: string;
  dataDir: string;
  /** Public origin clients use, e.g. https://localhost:8443 (no trailing slash). */
  baseUrl: string;
  databaseUrl: string | undefined;
  redisUrl: string | undefined;
  /** Access-token lifetime in seconds (CARA uses 300). */
  accessTokenTtl: number;
  /**
   * Name of a header in which a TLS-terminating proxy forwards the client certificate (URL-encoded PEM,
   * as nginx's $ssl_client_escaped_cert). Off unless set: trusting it without such a proxy lets anyone claim any certificate.
   */
  trustedCertHeader: string | undefined;
  logLevel: string;
}

export interface ConfigInput {
  port?: string | number | undefined;
  host?: string | undefined;
  dataDir?: string | undefined;
  baseUrl?: string | undefined;
  accessTokenTtl?: string | number | undefined;
  trustedCertHeader?: string | undefined;
  logLevel?: string | undefined;
}

class ConfigError extends Error {}

function integer(name: string, value: string | number, min: number, max: number): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`${name} must be an integer between ${min} and ${max}, got "${value}"`);
  }
  return n;
}

/** Flags win over CAREVAULT_* environment variables, which win over defaults. */
export function loadConfig(flags: ConfigInput = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const port = integer('port', flags.port ?? env.CAREVAULT_PORT ?? 8443, 0, 65535);
  const host = flags.host ?? env.CAREVAULT_HOST ?? '127.0.0.1';
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
    redisUrl: env.CAREVAULT_REDIS_URL || undefined,
    accessTokenTtl,
    trustedCertHeader: header ? header.toLowerCase() : undefined,
    logLevel: flags.logLevel ?? env.CAREVAULT_LOG_LEVEL ?? 'info',
  };
}

export { ConfigError };
