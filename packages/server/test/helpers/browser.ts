import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium } from 'playwright-core';
import { freePort } from './platform.ts';

/** Debian's Chromium (installed by .ci/run with apt-get); never a downloaded browser. */
export const CHROMIUM = process.env.CAREVAULT_CHROMIUM ?? '/usr/bin/chromium';
export const chromiumMissing = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium)`;

/** Where the browser tests leave screenshots for people to look at. */
export const SCREENSHOTS = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
  '..',
  'test-results',
  'screenshots',
);

/**
 * Headless Chromium that trusts exactly the platforms' server keys (by SPKI pin) and no network beyond
 * loopback (background networking off).
 */
export async function launchChromium(...serverCertPems: string[]): Promise<Browser> {
  const pins = serverCertPems.map((pem) =>
    createHash('sha256')
      .update(new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' }))
      .digest('base64'),
  );
  mkdirSync(SCREENSHOTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--ignore-certificate-errors-spki-list=${pins.join(',')}`,
    ],
  });
}

const require = createRequire(import.meta.url);
const FHIR_CLIENT_JS = readFileSync(require.resolve('fhirclient/build/fhir-client.js'), 'utf8');

/**
 * A SMART app as a browser serves it: launch.html starts fhirclient's authorize (standalone: with `iss`;
 * EHR: with the `iss` and `launch` the EHR put in the URL), app.html completes it and publishes what the
 * app could do as `window.result`.
 */
export async function startSmartApp(clientId: string, scope: string): Promise<{ origin: string; server: Server }> {
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const launchHtml = `<!doctype html><meta charset="utf-8"><script src="/fhir-client.js"></script><script>
const q = new URLSearchParams(location.search);
FHIR.oauth2.authorize({ clientId: ${JSON.stringify(clientId)}, scope: ${JSON.stringify(scope)},
  redirectUri: '/app.html', iss: q.get('iss'), pkceMode: 'required' });
</script>`;
  const appHtml = `<!doctype html><meta charset="utf-8"><title>app</title><script src="/fhir-client.js"></script><script>
FHIR.oauth2.ready().then(async (client) => {
  const status = (p) => client.request(p).then(() => 200, (e) => e.status || e.statusCode || String(e));
  const token = client.state.tokenResponse;
  const result = { patientId: client.patient.id, token, fhirUser: client.getFhirUser() };
  result.patient = await client.patient.read();
  result.conditionStatus = await status('Condition?patient=' + client.patient.id);
  result.user = client.getFhirUser() ? await client.user.read().catch((e) => ({ error: String(e) })) : null;
  window.result = result;
  document.body.textContent = 'ready';
}).catch((e) => { window.result = { error: String(e) }; });
</script>`;
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (type: string, body: string) => {
      res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (path === '/fhir-client.js') return send('text/javascript', FHIR_CLIENT_JS);
    if (path === '/launch.html') return send('text/html', launchHtml);
    if (path === '/app.html') return send('text/html', appHtml);
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { origin, server };
}
