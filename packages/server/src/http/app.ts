import { join } from 'node:path';
import { rootCertificates, type TLSSocket } from 'node:tls';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { aimRoutes } from '../aim/routes.ts';
import { auditRoutes } from '../audit/routes.ts';
import { AuditTrail } from '../audit/trail.ts';
import { outboundFetch } from '../auth/client-keys.ts';
import { ClientRegistry } from '../auth/clients.ts';
import { AuthServer } from '../auth/index.ts';
import { accountRoutes } from '../auth/interaction/account.ts';
import { interactionRoutes } from '../auth/interaction/routes.ts';
import { KeyRing } from '../auth/keys.ts';
import { launchRoutes } from '../auth/launch-api.ts';
import { certificateSource } from '../auth/mtls.ts';
import { GRANT_TTL_SECONDS } from '../auth/provider.ts';
import { CrlRefresher } from '../auth/trust/crl-refresh.ts';
import type { Config } from '../config/index.ts';
import { withInitLock } from '../config/init-lock.ts';
import { directoryRoutes } from '../directory/routes.ts';
import { programServer } from '../fhir/operations/program-server.ts';
import { fhirRoutes } from '../fhir/plugin.ts';
import { reindexIfStale } from '../fhir/search/reindex.ts';
import { SubscriptionDispatcher } from '../fhir/subscription/dispatch.ts';
import { configureEngine } from '../measure/engine.ts';
import { LoginThrottle, MemoryFailureCounters, RedisFailureCounters } from '../people/login-throttle.ts';
import { ensureDevPki, type Pki } from '../pki/dev-pki.ts';
import { loadIdps } from '../saml/idps.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/types.ts';
import { viewerRoutes } from '../viewer/routes.ts';
import { correlate, correlatedLogger, requestIdOf } from './correlation.ts';
import { healthRoutes } from './health.ts';
import { loggerOptions } from './logger.ts';
import { oauthRoutes } from './oauth-routes.ts';
import { addressLimit, MemoryRateLimiter, type RateLimiter, RedisRateLimiter } from './rate-limit.ts';
import { connectRedis } from './redis.ts';
import { clientErrorHandler, frameworkErrors, PARSER_MAX_HEADER_BYTES, requestLimits } from './request-limits.ts';
import { readRequestsThroughStream } from './tls-request-reads.ts';
import { trustedProxies } from './trusted-proxies.ts';

export interface Platform {
  app: FastifyInstance;
  auth: AuthServer;
  store: Store;
  clients: ClientRegistry;
  keys: KeyRing;
  pki: Pki;
  config: Config;
  issuer: string;
  fhirBase: string;
  close(): Promise<void>;
}

const KEY_CHECK_INTERVAL_MS = 5_000;

/** Builds the whole platform on one HTTPS listener (not yet listening). */
export async function buildPlatform(
  config: Config,
  options: { logStream?: NodeJS.WritableStream } = {},
): Promise<Platform> {
  const hostNames = [
    new URL(config.baseUrl).hostname,
    ...(config.host === '0.0.0.0' || config.host === '::' ? [] : [config.host]),
  ];
  // Said once the logger exists: the data directory's warnings and PKI notes.
  const notes: string[] = [];
  const proxies = config.trustedProxies ? trustedProxies(config.trustedProxies) : undefined;
  if (proxies)
    notes.push(`forwarded client addresses and certificates are believed from ${proxies.entries.join(', ')} only`);
  const store = await openStore({
    dataDir: config.dataDir,
    databaseUrl: config.databaseUrl,
    poolSize: config.databasePoolSize,
    idleTransactionTimeout: config.databaseTxIdleTimeout * 1000,
    searchTimeout: Math.round(config.searchTimeout * 1000),
    searchThreads: config.searchThreads,
    warn: (m) => notes.push(m),
  });
  const { pki, keys } = await withInitLock(config.dataDir, async () => ({
    pki: await ensureDevPki(config.dataDir, hostNames, (m) => notes.push(m)),
    keys: await KeyRing.open(config.dataDir),
  }));
  // Before serving: an index built by older search parameter definitions would answer some searches wrongly.
  await reindexIfStale(store, (m) => notes.push(m));
  const clients = new ClientRegistry(store);
  const issuer = config.baseUrl;
  const fhirBase = `${config.baseUrl}/fhir`;

  const app = Fastify({
    logger: { ...loggerOptions(config.logLevel), ...(options.logStream ? { stream: options.logStream } : {}) },
    https: {
      key: pki.server.keyPem,
      cert: pki.server.certPem,
      ca: pki.ca.certPem,
      // Ask every client for a certificate, require none: mTLS clients authenticate with it, others need not.
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      maxHeaderSize: PARSER_MAX_HEADER_BYTES,
    },
    frameworkErrors,
    clientErrorHandler,
    genReqId: requestIdOf,
    // FHIR clients (fhir-kit-client among them) POST batches to the base with a trailing slash.
    routerOptions: { ignoreTrailingSlash: true },
    trustProxy: proxies ? (address: string) => proxies.has(address) : false,
    forceCloseConnections: true,
  });
  for (const note of notes) app.log.warn(note);
  // TLS 1.2 lets a client renegotiate, and present another certificate on the same connection; a connection's
  // certificate is read once (auth/mtls.ts), so renegotiation is refused.
  app.server.on('secureConnection', (socket: TLSSocket) => {
    socket.disableRenegotiation();
    readRequestsThroughStream(socket);
  });
  app.setChildLoggerFactory(correlatedLogger);
  app.addHook('onRequest', requestLimits);
  app.addHook('onRequest', correlate);
  const redis = config.redisUrl ? connectRedis(config.redisUrl, app.log) : undefined;
  const limiter: RateLimiter = redis
    ? new RedisRateLimiter(redis, config.rateLimit, config.redisPrefix, app.log)
    : new MemoryRateLimiter(config.rateLimit);
  const throttle = new LoginThrottle(
    redis ? new RedisFailureCounters(redis, `${config.redisPrefix}login:`) : new MemoryFailureCounters(),
  );
  app.addHook('onRequest', addressLimit(limiter));
  const audit = new AuditTrail(store, config.audit, issuer, app.log);
  configureEngine(config.measureLimits);
  const certificates = certificateSource(
    pki.ca.certPem,
    config.trustedCertHeader && proxies ? { header: config.trustedCertHeader, proxies } : undefined,
  );
  const outboundCa = [...rootCertificates, pki.ca.certPem, ...config.outboundCa];
  const auth = new AuthServer({
    issuer,
    fhirBase,
    accessTokenTtl: config.accessTokenTtl,
    store,
    clients,
    keys,
    certificates,
    outboundCa,
    samlIdps: () => loadIdps(config.dataDir),
    log: app.log as unknown as Logger,
    audit,
  });

  await app.register(healthRoutes, {
    database: () => store.ping(),
    redis: redis ? async () => (await redis.ping()) === 'PONG' : undefined,
  });
  await app.register(oauthRoutes, { auth });
  await app.register(interactionRoutes, {
    auth,
    store,
    clients,
    keys,
    fhirBase,
    styleUrl: `${issuer}/oauth/smart-style.json`,
    grantTtlSeconds: GRANT_TTL_SECONDS,
    audit,
    throttle,
  });
  await app.register(accountRoutes, { store, audit, throttle, clients, keys });
  await app.register(aimRoutes, { store, auth, certificates, fhirBase, audit });
  await app.register(auditRoutes, { store, auth, certificates, fhirBase, issuer, audit });
  await app.register(launchRoutes, { auth, store, clients, fhirBase, certificates });
  const submissionPolicy = config.programServer
    ? programServer(config.programServer, outboundFetch(outboundCa))
    : undefined;
  await app.register(fhirRoutes, {
    prefix: '/fhir',
    issuer,
    fhirBase,
    store,
    auth,
    certificates,
    audit,
    submissionPolicy,
    jobsDir: join(config.dataDir, 'jobs'),
    responseLimit: config.maxResponseMb * 1024 * 1024,
    subscriptionEndpoints: config.subscriptions.endpoints,
  });
  const subscriptions = new SubscriptionDispatcher({
    store,
    audit,
    fhirBase,
    lockFile: join(config.dataDir, 'jobs', 'subscriptions.lock'),
    fetch: outboundFetch(outboundCa),
    ...config.subscriptions,
    log: app.log,
  });
  subscriptions.start();
  const crls = new CrlRefresher({ store, intervalMs: config.crlRefreshSeconds * 1000, log: app.log });
  crls.start();
  await app.register(viewerRoutes, { config, store, auth, certificates, fhirBase, audit });
  await app.register(directoryRoutes, {
    prefix: '/directory',
    store,
    audit,
    fhirBase,
    baseUrl: issuer,
    public: config.publicDirectory,
  });

  // close() waits for a sweep under way: ending the pool in the middle of one would fail its next query.
  let sweeping: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    try {
      auth.refreshKeys();
      sweeping = store
        .sweep(Math.floor(Date.now() / 1000))
        .catch((err: Error) => app.log.error({ err: { message: err.message } }, 'expired-row sweep failed'));
    } catch (err) {
      app.log.error({ err }, 'periodic maintenance failed');
    }
  }, KEY_CHECK_INTERVAL_MS);
  timer.unref();

  return {
    app,
    auth,
    store,
    clients,
    keys,
    pki,
    config,
    issuer,
    fhirBase,
    async close() {
      clearInterval(timer);
      await subscriptions.stop();
      await crls.stop();
      await app.close();
      await sweeping;
      await limiter.close();
      redis?.disconnect();
      await store.close();
    },
  };
}
