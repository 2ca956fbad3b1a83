import type { FastifyInstance } from 'fastify';

export interface HealthOptions {
  /** Whether the database answers. */
  database(): Promise<boolean>;
  /** Whether Redis answers; absent when none is configured. */
  redis?: (() => Promise<boolean>) | undefined;
}

const within = <T>(p: Promise<T>, ms: number, fallback: T) =>
  Promise.race([p.catch(() => fallback), new Promise<T>((r) => setTimeout(() => r(fallback), ms).unref())]);

/**
 * Probes for load balancers and orchestrators, without authentication: `/healthz` says the process serves
 * HTTP, `/readyz` that its database (and Redis, when configured) answer. They name no version, host or
 * error: only which dependency is down.
 */
export async function healthRoutes(app: FastifyInstance, o: HealthOptions): Promise<void> {
  app.get('/healthz', async (_req, reply) => reply.header('cache-control', 'no-store').send({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const [database, redis] = await Promise.all([
      within(o.database(), 2000, false),
      o.redis ? within(o.redis(), 2000, false) : Promise.resolve(undefined),
    ]);
    const checks = {
      database: database ? 'ok' : 'down',
      ...(redis === undefined ? {} : { redis: redis ? 'ok' : 'down' }),
    };
    const ready = database && redis !== false;
    return reply
      .code(ready ? 200 : 503)
      .header('cache-control', 'no-store')
      .send({ status: ready ? 'ok' : 'unavailable', checks });
  });
}
