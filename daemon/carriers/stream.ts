/**
 * Stream carriers: a listener (TCP or unix socket) whose every accepted connection is a source
 * "c<N>", and a dialer that keeps one connection to one remote (TCP, unix, or an onion service
 * through Tor), re-dialled with backoff while the carrier is open. Both frame messages as
 * stream-conn.ts does.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import { createSocketAt, removeOwnSocket, type FileId } from '../../plugins/common/socket-path.js';
import { listenAdopted } from '../../plugins/unix-stream/listen.js';
import type { Endpoint } from './endpoint.js';
import { FramedConnection, type ConnEvents } from './stream-conn.js';
import { StatsCounter, addressRateKey, ignoreMessage, reasonOf, type Carrier, type CarrierStats } from './types.js';

/**
 * Connections a listener holds at once. Anyone who can reach it may connect before any key is
 * checked, so past this a connection is shed: the stranger's (nothing authenticated on it yet,
 * see Carrier.vouch) connected longest, and only when every one is a peer's, the peer's silent
 * longest (a live link's dialer re-dials if it was the one shed).
 */
export const MAX_CONNECTIONS = 256;
/** A connection on which nothing authenticates within this long is closed (a handshake takes a round trip, or a few 5 s retries). */
export const STRANGER_DEADLINE_MS = 30_000;
/** TCP keepalive probes after this much silence: a dialer learns that a vanished remote is gone. */
const KEEPALIVE_MS = 25_000;

function tuneTcp(sock: net.Socket): void {
  sock.setNoDelay(true);
  sock.setKeepAlive(true, KEEPALIVE_MS);
}

function hostPortText(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

type StreamListen = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string; gid?: number };

class StreamListener implements Carrier {
  private handler: (msg: Buffer, from: string) => void = ignoreMessage;
  private readonly counters = new StatsCounter();
  private readonly conns = new Map<string, FramedConnection>();
  private readonly deadlines = new Map<FramedConnection, NodeJS.Timeout>();
  private nextConn = 1;
  private closed = false;
  private readonly events: ConnEvents = {
    deliver: (msg, from) => this.handler(msg, from),
    closed: (conn, why) => {
      if (this.conns.get(conn.from) === conn) this.conns.delete(conn.from);
      const t = this.deadlines.get(conn);
      if (t !== undefined) clearTimeout(t);
      this.deadlines.delete(conn);
      this.log.debug({ carrier: this.id, conn: conn.from, why }, 'stream connection closed');
    },
  };

  constructor(
    readonly id: string,
    readonly kind: 'tcp' | 'unix',
    private readonly server: net.Server,
    private readonly where: string,
    /** The unix socket file made for this listener, removed at close. */
    private readonly made: { path: string; id: FileId } | null,
    private readonly log: Logger,
    private readonly strangerDeadlineMs: number,
  ) {
    server.on('connection', (sock) => this.accept(sock));
    server.on('error', (e) => this.log.error({ carrier: this.id, err: reasonOf(e) }, 'listening socket failed'));
  }

  get localPort(): number | undefined {
    const a = this.server.address();
    return a !== null && typeof a === 'object' ? a.port : undefined;
  }

  private accept(sock: net.Socket): void {
    if (this.closed) {
      sock.destroy();
      return;
    }
    if (this.conns.size >= MAX_CONNECTIONS) {
      let quietest: FramedConnection | null = null;
      for (const c of this.conns.values()) {
        // A stranger's before any peer's: the stranger connected longest (nearest its deadline;
        // talking does not keep a stranger's connection, or a flood of chatty ones would shed a
        // peer's new connection before its handshake completes); among peers, the one silent longest.
        if (quietest === null || (quietest.vouched && !c.vouched)) quietest = c;
        else if (quietest.vouched === c.vouched && (c.vouched ? c.lastRx < quietest.lastRx : c.openedAt < quietest.openedAt)) quietest = c;
      }
      if (quietest !== null) {
        this.conns.delete(quietest.from);
        quietest.destroy(`shed: more than ${MAX_CONNECTIONS} connections`);
        this.log.warn({ carrier: this.id, conn: quietest.from }, 'too many connections; closed the one silent longest');
      }
    }
    if (this.kind === 'tcp') tuneTcp(sock);
    const from = `c${this.nextConn++}`;
    const conn = new FramedConnection(sock, from, this.counters, this.events);
    this.conns.set(from, conn);
    if (conn.open) {
      const t = setTimeout(() => {
        this.deadlines.delete(conn);
        if (!conn.vouched) conn.destroy(`nothing authenticated within ${this.strangerDeadlineMs / 1000} s`);
      }, this.strangerDeadlineMs);
      t.unref();
      this.deadlines.set(conn, t);
    }
    this.log.debug({ carrier: this.id, conn: from, remote: sock.remoteAddress }, 'stream connection accepted');
  }

  onMessage(h: (msg: Buffer, from: string) => void): void {
    this.handler = h;
  }

  /** TCP: the remote's address (its connections share one allowance); unix: each connection. */
  rateKey(from: string): string {
    const c = this.conns.get(from);
    const a = this.kind === 'tcp' ? c?.sock.remoteAddress : undefined;
    if (a === undefined) return from;
    const plain = a.startsWith('::ffff:') && net.isIPv4(a.slice(7)) ? a.slice(7) : a;
    return addressRateKey(plain.includes(':') ? `[${plain}]:0` : `${plain}:0`);
  }

  vouch(from: string): void {
    const c = this.conns.get(from);
    if (c === undefined || c.vouched) return;
    c.vouched = true;
    const t = this.deadlines.get(c);
    if (t !== undefined) clearTimeout(t);
    this.deadlines.delete(c);
  }

  send(to: string, msgs: readonly Buffer[]): boolean {
    const c = this.conns.get(to);
    if (c === undefined) {
      this.counters.drop('no-connection', msgs.length);
      return false;
    }
    return c.write(msgs);
  }

  resolve(e: Endpoint): Promise<string> {
    return Promise.reject(new Error(`a listening ${this.kind} carrier sends only on connections it accepted; it cannot reach ${e.kind} endpoints`));
  }

  stats(): CarrierStats {
    return this.counters.snapshot();
  }

  status(): string {
    if (this.closed) return `${this.kind} ${this.where} closed`;
    const n = this.conns.size;
    return `${this.kind} ${this.where} listening, ${n} connection${n === 1 ? '' : 's'}`;
  }

  reachable(to: string): boolean {
    return this.conns.get(to)?.open === true;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const done = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.conns.values()) c.destroy('carrier closed');
    this.conns.clear();
    for (const t of this.deadlines.values()) clearTimeout(t);
    this.deadlines.clear();
    await done;
    if (this.made !== null && !removeOwnSocket(this.made.path, this.made.id)) {
      this.log.warn({ carrier: this.id, path: this.where }, 'the socket at the path is no longer the one mvnet made; left in place');
    }
  }
}

export async function listenStream(o: { id: string; listen: StreamListen; log: Logger; strangerDeadlineMs?: number }): Promise<Carrier & { readonly localPort?: number }> {
  const l = o.listen;
  const deadline = o.strangerDeadlineMs ?? STRANGER_DEADLINE_MS;
  if (l.kind === 'unix') {
    let made;
    try {
      made = await createSocketAt(l.path, l.gid, listenAdopted, (s) => s.close());
    } catch (e) {
      throw new Error(`cannot listen on unix ${l.path}: ${(e as Error).message}`);
    }
    return new StreamListener(o.id, 'unix', made.value, l.path, { path: made.path, id: made.id }, o.log, deadline);
  }
  const server = net.createServer();
  const host = l.host === '' ? '::' : l.host;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // '::' with ipv6Only off takes IPv4 as well (dual stack).
    server.listen({ host, port: l.port, ipv6Only: false, exclusive: true }, () => {
      server.removeListener('error', reject);
      resolve();
    });
  }).catch((e: unknown) => {
    server.close();
    throw new Error(`cannot listen on tcp ${hostPortText(host, l.port)}: ${reasonOf(e)}`);
  });
  const a = server.address() as net.AddressInfo;
  return new StreamListener(o.id, 'tcp', server, hostPortText(host, a.port), null, o.log, deadline);
}

/** Re-dial delays: the first, doubled after each failure up to the last. */
export interface Backoff {
  firstMs: number;
  maxMs: number;
}
const DEFAULT_BACKOFF: Backoff = { firstMs: 1000, maxMs: 30_000 };

type DialState = { s: 'connecting' } | { s: 'connected'; conn: FramedConnection } | { s: 'waiting'; until: number; why: string } | { s: 'closed' };

class StreamDialer implements Carrier {
  private handler: (msg: Buffer, from: string) => void = ignoreMessage;
  private readonly counters = new StatsCounter();
  private state: DialState = { s: 'connecting' };
  private delayMs: number;
  private timer: NodeJS.Timeout | null = null;
  private connectedHandler: () => void = () => {};
  private readonly events: ConnEvents = {
    deliver: (msg, from) => this.handler(msg, from),
    closed: (conn, why) => this.lost(conn, why),
  };

  constructor(
    readonly id: string,
    readonly kind: 'tcp' | 'unix' | 'onion',
    private readonly connect: () => Promise<net.Socket>,
    private readonly describe: string,
    private readonly log: Logger,
    private readonly backoff: Backoff,
  ) {
    this.delayMs = backoff.firstMs;
    this.dial();
  }

  private dial(): void {
    this.timer = null;
    this.state = { s: 'connecting' };
    let attempt: Promise<net.Socket>;
    try {
      attempt = this.connect();
    } catch (e) {
      attempt = Promise.reject(e);
    }
    attempt.then(
      (sock) => {
        if (this.state.s === 'closed') {
          sock.destroy();
          return;
        }
        if (this.kind === 'tcp') tuneTcp(sock);
        const conn = new FramedConnection(sock, 'remote', this.counters, this.events);
        // We chose to dial it: the remote is the configured one, not a stranger.
        conn.vouched = true;
        this.state = { s: 'connected', conn };
        this.log.info({ carrier: this.id, to: this.describe }, 'link stream connected');
        this.connectedHandler();
      },
      (e: unknown) => {
        if (this.state.s !== 'closed') this.retry(reasonOf(e));
      },
    );
  }

  private lost(conn: FramedConnection, why: string): void {
    if (this.state.s !== 'connected' || this.state.conn !== conn) return;
    this.log.info({ carrier: this.id, to: this.describe, why }, 'link stream lost');
    // A connection that carried messages for a while was good: start the backoff over, and
    // dial again at once (a remote that only accepts and closes still waits its turn).
    if (conn.gotMessage && Date.now() - conn.openedAt >= this.backoff.firstMs) {
      this.delayMs = this.backoff.firstMs;
      this.dial();
    } else {
      this.retry(why);
    }
  }

  private retry(why: string): void {
    const delay = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, this.backoff.maxMs);
    this.state = { s: 'waiting', until: Date.now() + delay, why };
    this.log.debug({ carrier: this.id, to: this.describe, why, delayMs: delay }, 'link stream dial failed; retrying');
    this.timer = setTimeout(() => this.dial(), delay);
  }

  onConnected(h: () => void): void {
    this.connectedHandler = h;
  }

  onMessage(h: (msg: Buffer, from: string) => void): void {
    this.handler = h;
  }

  send(to: string, msgs: readonly Buffer[]): boolean {
    if (to !== 'remote' || this.state.s !== 'connected') {
      this.counters.drop('no-connection', msgs.length);
      return false;
    }
    return this.state.conn.write(msgs);
  }

  resolve(_e: Endpoint): Promise<string> {
    return Promise.resolve('remote');
  }

  stats(): CarrierStats {
    return this.counters.snapshot();
  }

  status(): string {
    const head = `${this.kind} → ${this.describe}`;
    switch (this.state.s) {
      case 'connecting':
        return `${head} connecting`;
      case 'connected':
        return `${head} connected`;
      case 'waiting':
        return `${head} reconnecting in ${Math.max(0, Math.ceil((this.state.until - Date.now()) / 1000))} s (${this.state.why})`;
      case 'closed':
        return `${head} closed`;
    }
  }

  reachable(to: string): boolean {
    return to === 'remote' && this.state.s === 'connected' && this.state.conn.open;
  }

  close(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const st = this.state;
    this.state = { s: 'closed' };
    if (st.s !== 'connected' || st.conn.sock.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      st.conn.sock.once('close', () => resolve());
      st.conn.destroy('carrier closed');
    });
  }
}

/** A stream to one remote, re-dialled with backoff (1 s doubling to 30 s, reset after a good connection) while open. */
export function dialStream(o: { id: string; kind: 'tcp' | 'unix' | 'onion'; connect: () => Promise<net.Socket>; describe: string; log: Logger; backoff?: Backoff }): Carrier {
  return new StreamDialer(o.id, o.kind, o.connect, o.describe, o.log, o.backoff ?? DEFAULT_BACKOFF);
}
