import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { writeSecretFile } from './config/files.ts';
import { type Config, ConfigError, SERVER_INFO_FILE } from './config/index.ts';
import { buildPlatform } from './http/app.ts';

/** `carevault serve`: starts the platform and stops it cleanly on SIGINT/SIGTERM. */
export async function serve(config: Config): Promise<void> {
  await checkHost(config.host);
  const platform = await buildPlatform(config);
  try {
    await platform.app.listen({ port: config.port, host: config.host });
  } catch (err) {
    await platform.close().catch(() => {});
    throw listenError(err, config);
  }
  writeSecretFile(
    join(config.dataDir, SERVER_INFO_FILE),
    JSON.stringify({ baseUrl: platform.issuer, fhirBase: platform.fhirBase, pid: process.pid }),
  );
  process.stdout.write(
    [
      'carevault is running',
      `  issuer:     ${platform.issuer}`,
      `  FHIR base:  ${platform.fhirBase}`,
      `  trust anchor (CA): ${platform.pki.caPath}`,
      `  data:       ${config.dataDir}`,
      '',
    ].join('\n'),
  );
  const stop = async () => {
    await platform.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

/**
 * The address to listen on, judged before anything is written: the dev PKI names it in the server certificate,
 * which a host that cannot be listened on must not leave behind.
 */
async function checkHost(host: string): Promise<void> {
  if (host === '0.0.0.0' || host === '::') return;
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookup(host, { all: true })).map((a) => a.address);
  } catch {
    throw new ConfigError(`cannot resolve ${host} (--host)`);
  }
  const own = new Set(
    Object.values(networkInterfaces())
      .flat()
      .map((i) => i?.address),
  );
  // Linux answers for all of 127.0.0.0/8 on its loopback interface, which lists only 127.0.0.1.
  // An IPv6 address may carry its interface (`fe80::1%eth0`), which the interface list does not.
  if (!addresses.some((a) => own.has(a.split('%')[0]) || a.startsWith('127.') || a === '::1'))
    throw new ConfigError(`${host} is not an address of this machine (--host)`);
}

function listenError(err: unknown, config: Config): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  const where = `${config.host}:${config.port}`;
  if (code === 'EADDRINUSE')
    return new ConfigError(`port ${where} is already in use (another carevault?); choose another with --port`);
  if (code === 'EACCES') return new ConfigError(`not allowed to listen on ${where}; use a port above 1023`);
  if (code === 'EADDRNOTAVAIL') return new ConfigError(`${config.host} is not an address of this machine (--host)`);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new ConfigError(`cannot resolve ${config.host} (--host)`);
  return err;
}
