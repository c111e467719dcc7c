/**
 * One VM TCP connection bridged to its upstream stream. Backpressure both ways: bytes from the
 * VM are consumed (the window reopens) only as the upstream accepts them; bytes from upstream
 * pause the upstream while the connection's send buffer is full.
 */
import type { Duplex } from 'node:stream';
import { TcpConnection, type CloseReason, type Segment, type TcpConnectionOptions, type TcpHandler } from './tcp/index.js';
import type { Timed } from './timers.js';
import type { FlowAddr } from './addr.js';
import { UpstreamError, type StreamUpstream } from './upstream.js';
import { dataPathFault } from '../errors.js';

/** What a flow needs from the endpoint that owns it. */
export interface FlowOwner {
  now(): number;
  reschedule(f: TcpFlow): void;
  emit(f: TcpFlow, seg: Segment): void;
  closed(f: TcpFlow, reason: CloseReason): void;
  unreachable(f: TcpFlow): void;
}

/** Upstream writes beyond this many queued bytes hold the VM's window closed. */
const UPSTREAM_HIGH_WATER = 512 * 1024;

export class TcpFlow implements Timed, TcpHandler {
  deadline: number | null = null;
  queued: number | null = null;
  readonly conn: TcpConnection;
  private sock: Duplex | null = null;
  private readonly abortOpen = new AbortController();
  /** Upstream bytes the connection could not take yet. */
  private backlog: Buffer | null = null;
  /** VM bytes written upstream but held (not consumed) until the upstream drains. */
  private held = 0;
  private upstreamEnded = false;
  private done = false;

  constructor(
    readonly owner: FlowOwner,
    readonly vm: string,
    readonly key: string,
    readonly addr: FlowAddr,
    readonly upstream: StreamUpstream,
    init: { syn: Segment } | { connected: Duplex },
    opts: Omit<TcpConnectionOptions, 'emit' | 'handler' | 'clock'>,
  ) {
    const full: TcpConnectionOptions = { ...opts, emit: (s) => owner.emit(this, s), handler: this, clock: () => owner.now() };
    if ('syn' in init) {
      this.conn = TcpConnection.fromSyn(init.syn, full, owner.now());
      this.open().catch((e: unknown) => dataPathFault('tcp upstream open', e, { tag: this.upstream.tag }));
    } else {
      // An active open into the VM (a port forward): the host side is already connected.
      this.conn = TcpConnection.connect(full, owner.now());
      this.attachUpstream(init.connected);
    }
  }

  get tag(): string {
    return this.upstream.tag;
  }

  private async open(): Promise<void> {
    let sock: Duplex;
    try {
      sock = await this.upstream.open(this.abortOpen.signal);
    } catch (e) {
      if (this.done) return;
      const failure = e instanceof UpstreamError ? e.failure : 'refused';
      if (failure === 'refused') this.conn.refuse();
      else {
        if (failure === 'unreachable') this.owner.unreachable(this);
        this.conn.drop();
      }
      this.owner.reschedule(this);
      return;
    }
    if (this.done || this.conn.closed) {
      sock.destroy();
      return;
    }
    this.attachUpstream(sock);
    this.conn.accept();
    this.owner.reschedule(this);
  }

  private attachUpstream(sock: Duplex): void {
    this.sock = sock;
    // Socket callbacks are a batch boundary: a bug in one is counted, never an uncaught throw.
    const guard =
      <A extends unknown[]>(what: string, fn: (...a: A) => void) =>
      (...a: A): void => {
        try {
          fn(...a);
        } catch (e) {
          dataPathFault(`tcp upstream ${what}`, e, { tag: this.upstream.tag });
        }
      };
    sock.on('data', guard('data', (d: Buffer) => this.fromUpstream(d)));
    sock.on(
      'end',
      guard('end', () => {
        const confirm = this.upstream.confirmEnd;
        if (confirm === undefined) {
          this.upstreamEnd();
          return;
        }
        // An upstream that may die under its streams (Tor): an EOF is a clean end only if it is
        // still alive; otherwise the VM must see a reset, never a truncated stream that looks whole.
        confirm().then(
          guard('end', (alive: boolean) => (alive ? this.upstreamEnd() : this.upstreamFailed())),
          guard('end', () => this.upstreamFailed()),
        );
      }),
    );
    sock.on(
      'drain',
      guard('drain', () => {
        if (this.held > 0) {
          const n = this.held;
          this.held = 0;
          this.conn.consume(n);
          this.owner.reschedule(this);
        }
      }),
    );
    sock.on('error', guard('error', () => this.upstreamFailed()));
    sock.on(
      'close',
      guard('close', () => {
        if (!this.upstreamEnded && !this.conn.closed && this.upstream.confirmEnd === undefined) this.upstreamFailed();
      }),
    );
    // An upstream may hand over its socket paused (the Tor SOCKS handshake pauses it to keep the
    // bytes that came with the reply): a 'data' listener alone does not restart an explicit pause.
    sock.resume();
  }

  private upstreamEnd(): void {
    if (this.done) return;
    this.upstreamEnded = true;
    if (this.backlog === null) this.conn.shutdown();
    this.owner.reschedule(this);
  }

  private upstreamFailed(): void {
    if (this.done) return;
    // The far side reset or failed: the VM sees a reset too.
    this.conn.abort();
    this.owner.reschedule(this);
  }

  private fromUpstream(d: Buffer): void {
    if (this.backlog !== null) {
      this.backlog = Buffer.concat([this.backlog, d]);
      this.sock?.pause();
      return;
    }
    const n = this.conn.write(d);
    if (n < d.length) {
      this.backlog = d.subarray(n);
      this.sock?.pause();
    }
    this.owner.reschedule(this);
  }

  /** TcpHandler: room in the send buffer again. */
  onWritable(): void {
    const b = this.backlog;
    if (b === null) return;
    const n = this.conn.write(b);
    if (n < b.length) {
      this.backlog = b.subarray(n);
      return;
    }
    this.backlog = null;
    if (this.upstreamEnded) this.conn.shutdown();
    else this.sock?.resume();
  }

  /** TcpHandler: in-order bytes from the VM (a view of the frame: copied before queuing). */
  onData(chunk: Buffer): void {
    const sock = this.sock;
    if (sock === null) {
      this.conn.consume(chunk.length);
      return;
    }
    sock.write(Buffer.from(chunk));
    if (sock.writableLength > UPSTREAM_HIGH_WATER) this.held += chunk.length;
    else this.conn.consume(chunk.length);
  }

  onEnd(): void {
    this.sock?.end();
  }

  onClose(reason: CloseReason): void {
    if (this.done) return;
    this.done = true;
    this.abortOpen.abort();
    const sock = this.sock;
    if (sock !== null) {
      if (reason === 'normal') sock.end();
      else {
        // A TCP host socket is reset (RST) so the far side sees what the VM did; anything else
        // (a unix socket to Tor, an in-process stream) is just destroyed.
        try {
          if ('resetAndDestroy' in sock && typeof sock.resetAndDestroy === 'function') (sock as { resetAndDestroy(): void }).resetAndDestroy();
          else sock.destroy();
        } catch {
          sock.destroy();
        }
      }
    }
    this.owner.closed(this, reason);
  }

  input(seg: Segment, now: number): boolean {
    const more = this.conn.input(seg, now);
    this.owner.reschedule(this);
    return more;
  }

  fire(now: number): void {
    this.conn.poll(now);
    this.owner.reschedule(this);
  }

  /** Route change or limits: reset both ways. */
  reset(): void {
    this.conn.abort();
    this.owner.reschedule(this);
  }
}
