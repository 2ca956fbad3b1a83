import type { Config } from './config/index.ts';
import { buildPlatform } from './http/app.ts';

/** `carevault serve`: starts the platform and stops it cleanly on SIGINT/SIGTERM. */
export async function serve(config: Config): Promise<void> {
  const platform = await buildPlatform(config);
  await platform.app.listen({ port: config.port, host: config.host });
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
