import type { Duplex } from 'node:stream';
import type pg from 'pg';
import { newClient, type PgTarget } from './connection.ts';

/** The listening connection answers a heartbeat this often… */
const HEARTBEAT_MS = 400;
/** …and mirrors answer only while the last answer is at most this old. */
const FRESH_MS = 1000;
const RETRY_MS = 1000;

/** One in-memory mirror of a table, kept current by NOTIFY on `channel`. */
export interface Subscription {
  channel: string;
  /** A notification on the channel; any database user may NOTIFY it, so parse defensively and never throw. */
  notify(payload: string): void;
  /** After LISTEN on a new connection, before the mirror is trusted: (re)load what it mirrors. */
  load(client: pg.Client): Promise<void>;
}

export interface Listener {
  /** Adds a mirror's channel; before the first start(). */
  subscribe(subscription: Subscription): void;
  /** Whether mirrors may answer now: LISTENing, loaded after LISTEN, heard from within the last second. */
  fresh(): boolean;
  /** Starts listening (once; lazily, at the first use of a mirror). */
  start(): void;
  close(): Promise<void>;
}

/**
 * One connection per node that LISTENs on the mirrors' channels. A change NOTIFYs in the statement that
 * makes it (delivered on commit). The mirrors answer only while this connection is known alive: LISTENing,
 * loaded after LISTEN (so nothing changed in between is missed), and answering a heartbeat within the last
 * second. Otherwise — before the first load, while reconnecting, or when the connection went silent — they
 * read the table: a change on any node is seen by every node within a second, and never missed.
 */
export function listener(target: PgTarget): Listener {
  const subscriptions: Subscription[] = [];
  const byChannel = new Map<string, Subscription>();
  let client: pg.Client | undefined; // connecting or connected
  let live = false; // listening and loaded
  let answeredAt = 0;
  let beating: pg.Client | undefined; // whose heartbeat is under way (one that hangs must not block the next)
  let closed = false;
  let heartbeat: NodeJS.Timeout | undefined;
  let retry: NodeJS.Timeout | undefined;

  function drop(c: pg.Client) {
    if (client !== c) return;
    client = undefined;
    live = false;
    c.end().catch(() => {});
    if (!closed) retry = setTimeout(listen, RETRY_MS).unref();
  }

  async function listen() {
    retry = undefined;
    const c = newClient(target);
    client = c;
    c.on('error', () => drop(c));
    c.on('end', () => drop(c));
    // pg reports a lost connection only once its socket has closed, after Node has shut down its own side: under
    // load that trailed the server's close by tens of milliseconds, in which the mirrors still answered (a
    // revocation made meanwhile read as not revoked). They stop answering when the close arrives.
    (c as unknown as { connection?: { stream?: Duplex } }).connection?.stream?.once('end', () => drop(c));
    c.on('notification', (n) => {
      if (n.payload) byChannel.get(n.channel)?.notify(n.payload);
    });
    try {
      await c.connect();
      for (const s of subscriptions) await c.query(`LISTEN ${s.channel}`);
      for (const s of subscriptions) await s.load(c);
      if (client !== c) return;
      answeredAt = Date.now();
      live = true;
    } catch {
      drop(c);
    }
  }

  return {
    subscribe(s) {
      subscriptions.push(s);
      byChannel.set(s.channel, s);
    },
    fresh: () => live && Date.now() - answeredAt <= FRESH_MS,
    start() {
      if (closed || heartbeat) return;
      void listen();
      heartbeat = setInterval(() => {
        const c = client;
        if (!c || !live) return;
        // Silent for long (a connection dropped without a reset): start over on a new one.
        if (Date.now() - answeredAt > 5 * FRESH_MS) return drop(c);
        if (beating === c) return;
        beating = c;
        c.query('SELECT 1')
          .then(() => {
            if (client === c) answeredAt = Date.now();
          })
          .catch(() => drop(c))
          .finally(() => {
            if (beating === c) beating = undefined;
          });
      }, HEARTBEAT_MS).unref();
    },
    async close() {
      closed = true;
      clearInterval(heartbeat);
      clearTimeout(retry);
      const c = client;
      client = undefined;
      live = false;
      await c?.end().catch(() => {});
    },
  };
}
