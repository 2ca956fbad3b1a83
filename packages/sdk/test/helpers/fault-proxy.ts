import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { Agent, request } from 'undici';

/** What the proxy does with one request. */
export type Fault =
  | { kind: 'pass' }
  /** Answer `status` without asking the upstream, after `afterMs` when given. */
  | { kind: 'status'; status: number; retryAfter?: number; afterMs?: number }
  | { kind: 'drop' }
  /** Forward, then send the answer's headers and its first `bytes` bytes, and close the connection (after `stallMs`). */
  | { kind: 'truncate'; bytes: number; stallMs?: number }
  /** Forward, then send the answer's body in `chunks` parts, `everyMs` apart (a slow link). */
  | { kind: 'drip'; chunks: number; everyMs: number }
  | { kind: 'delay'; ms: number }
  /**
   * Answer at once with `status` and a body that never ends (a broken or hostile server), declaring `declared`
   * bytes as its Content-Length when given; `flooded` counts what the client took before it closed.
   */
  | { kind: 'flood'; status: number; declared?: number }
  /** Forward, then rewrite this response's entries with the given status for the given indexes (batch answers). */
  | { kind: 'entry-status'; status: number; every: number };

export interface FaultProxyOptions {
  upstream: string;
  /** TLS identity of the proxy (the platform's server certificate) and the CA the upstream is checked against. */
  cert: string;
  key: string;
  ca: string;
  /** Header in which the client certificate travels to the upstream (the server's --trusted-cert-header). */
  certHeader: string;
}

export interface RequestSeen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
}

/**
 * A loopback TLS-terminating proxy in front of a real carevault (the way nginx sits in front of it), that can
 * inject the faults and quirks real networks and EHRs have: 429/503, dropped connections, slow answers, batch
 * entries answered 503, requests without an explicit Accept refused (as Cerner does), `next` links on an
 * internal host name, and a 401 `invalid_token` after a token rotation.
 */
export class FaultProxy {
  readonly seen: RequestSeen[] = [];
  /** Flooded answers the client gave up on (it closed the connection), and the bytes written into them. */
  readonly flooded = { closed: 0, bytes: 0 };
  fault: (req: RequestSeen, n: number) => Fault = () => ({ kind: 'pass' });
  /** Cerner: a FHIR request without an explicit FHIR/JSON Accept is refused with 406. */
  requireAccept = false;
  /** Rewrites Bundle links onto this origin (an internal host name the client cannot reach). */
  linkOrigin: string | undefined;
  /** Tokens seen before `rotateTokens()` get one 401 invalid_token each afterwards. */
  private readonly tokensBefore = new Set<string>();
  private readonly rejected = new Set<string>();
  private rotated = false;
  private server!: Server;
  private readonly agent: Agent;
  port = 0;

  constructor(private readonly o: FaultProxyOptions) {
    this.agent = new Agent({ connect: { ca: o.ca, servername: 'localhost' } });
  }

  get origin(): string {
    return `https://localhost:${this.port}`;
  }

  rotateTokens(): void {
    this.rotated = true;
  }

  async start(port = 0): Promise<this> {
    this.server = createServer(
      { cert: this.o.cert, key: this.o.key, requestCert: true, rejectUnauthorized: false },
      (req, res) => void this.handle(req, res).catch(() => res.destroy()),
    );
    await new Promise<void>((resolve) => this.server.listen(port, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
    await this.agent.close();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const seen: RequestSeen = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers };
    this.seen.push(seen);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const isFhir = seen.url.startsWith('/fhir/');
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (isFhir && bearer) {
      if (!this.rotated) this.tokensBefore.add(bearer);
      else if (this.tokensBefore.has(bearer) && !this.rejected.has(bearer)) {
        this.rejected.add(bearer);
        return send(res, 401, outcome('login', 'token no longer valid'), {
          'www-authenticate': 'Bearer error="invalid_token", error_description="token rotated"',
        });
      }
    }
    if (isFhir && this.requireAccept && !/application\/(fhir\+)?json/.test(String(req.headers.accept ?? ''))) {
      return send(res, 406, outcome('not-supported', 'an explicit Accept: application/fhir+json is required'));
    }
    const fault = this.fault(seen, this.seen.length - 1);
    if (fault.kind === 'drop') {
      req.socket.destroy();
      return;
    }
    if (fault.kind === 'status') {
      if (fault.afterMs) await new Promise((r) => setTimeout(r, fault.afterMs));
      return send(res, fault.status, outcome(fault.status === 429 ? 'throttled' : 'transient', 'injected fault'), {
        ...(fault.retryAfter !== undefined ? { 'retry-after': String(fault.retryAfter) } : {}),
      });
    }
    if (fault.kind === 'delay') await new Promise((r) => setTimeout(r, fault.ms));
    if (fault.kind === 'flood') return this.flood(res, fault);

    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (v === undefined || ['host', 'connection', 'keep-alive', 'transfer-encoding', this.o.certHeader].includes(k))
        continue;
      headers[k] = Array.isArray(v) ? v.join(', ') : v;
    }
    const peer = (req.socket as TLSSocket).getPeerCertificate?.(false);
    if (peer?.raw) headers[this.o.certHeader] = encodeURIComponent(toPem(peer.raw));
    // As nginx is told to: the public host and scheme, so the server's URLs name the proxy, not itself.
    headers['x-forwarded-host'] = req.headers.host ?? `localhost:${this.port}`;
    headers['x-forwarded-proto'] = 'https';
    const up = await request(`${this.o.upstream}${seen.url}`, {
      method: seen.method as 'GET',
      headers,
      body: body.length ? body : null,
      dispatcher: this.agent,
    });
    let text = await up.body.text();
    if (fault.kind === 'entry-status' || this.linkOrigin) text = this.rewrite(text, fault);
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(up.headers)) {
      if (v === undefined || ['content-length', 'connection', 'keep-alive', 'transfer-encoding'].includes(k)) continue;
      out[k] = Array.isArray(v) ? v.join(', ') : v;
    }
    res.writeHead(up.statusCode, { ...out, 'content-length': String(Buffer.byteLength(text)) });
    if (fault.kind === 'truncate') {
      res.write(Buffer.from(text).subarray(0, fault.bytes), () => setTimeout(() => res.destroy(), fault.stallMs ?? 0));
      return;
    }
    if (fault.kind === 'drip') {
      const bytes = Buffer.from(text);
      const size = Math.ceil(bytes.length / fault.chunks);
      for (let at = 0; at < bytes.length; at += size) {
        res.write(bytes.subarray(at, at + size));
        await new Promise((r) => setTimeout(r, fault.everyMs));
      }
    }
    res.end(fault.kind === 'drip' ? undefined : text);
  }

  private flood(res: ServerResponse, fault: Fault & { kind: 'flood' }): void {
    res.writeHead(fault.status, {
      'content-type': 'application/json',
      ...(fault.declared !== undefined ? { 'content-length': String(fault.declared) } : {}),
    });
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    res.write('{"resourceType":"Bundle","type":"searchset","entry":[');
    const pump = () => {
      for (let more = true; more && !res.destroyed; this.flooded.bytes += chunk.length) more = res.write(chunk);
    };
    res.on('drain', pump);
    res.on('close', () => this.flooded.closed++);
    res.on('error', () => {});
    pump();
  }

  private rewrite(text: string, fault: Fault): string {
    let json: { resourceType?: string; link?: { url: string }[]; entry?: { response?: { status: string } }[] };
    try {
      json = JSON.parse(text);
    } catch {
      return text;
    }
    if (json.resourceType !== 'Bundle') return text;
    if (this.linkOrigin) {
      for (const l of json.link ?? []) l.url = this.linkOrigin + new URL(l.url).pathname + new URL(l.url).search;
    }
    if (fault.kind === 'entry-status') {
      json.entry?.forEach((e, i) => {
        if (i % fault.every === 0 && e.response) e.response = { status: `${fault.status} Injected` };
      });
    }
    return JSON.stringify(json);
  }
}

function toPem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n');
  return `-----BEGIN CERTIFICATE-----\n${b64.trim()}\n-----END CERTIFICATE-----\n`;
}

const outcome = (code: string, diagnostics: string) => ({
  resourceType: 'OperationOutcome',
  issue: [{ severity: 'error', code, diagnostics }],
});

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  res.writeHead(status, { 'content-type': 'application/fhir+json', ...headers });
  res.end(JSON.stringify(body));
}
