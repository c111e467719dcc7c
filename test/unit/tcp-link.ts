/**
 * Test support for daemon/endpoint/tcp: two TcpConnection endpoints back to back through a
 * simulated link that can drop, duplicate, reorder and delay segments, deterministically
 * (seeded PRNG), on a fake clock. Side 'a' opens actively (`connect`), side 'b' plays the
 * owner of a listening port (creates connections from SYNs with `fromSyn` and decides).
 */
import {
  ACK,
  RST,
  SYN,
  TcpConnection,
  describeSegment,
  resetFor,
  type CloseReason,
  type Segment,
  type TcpConnectionOptions,
  type TcpHandler,
} from '../../daemon/endpoint/tcp/index.js';
import { mulberry32 } from '../support/mulberry32.js';

/** mulberry32 (test/support/mulberry32.ts), with random bytes. */
export class Rng {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      const v = (this.next() * 4294967296) >>> 0;
      b[i] = v & 0xff;
      if (i + 1 < n) b[i + 1] = (v >>> 8) & 0xff;
      if (i + 2 < n) b[i + 2] = (v >>> 16) & 0xff;
      if (i + 3 < n) b[i + 3] = v >>> 24;
    }
    return b;
  }
}

export type Side = 'a' | 'b';

export interface LinkConfig {
  /** One-way delay in ms. Default 5. */
  delay?: number;
  /** Uniform extra delay in [0, jitter) ms for every segment (reorders bursts). Default 0. */
  jitter?: number;
  /** Drop probability. Default 0. */
  loss?: number;
  /** Duplicate probability. Default 0. */
  dup?: number;
  /** Probability that a segment is held back `reorderDelay` ms. Default 0. */
  reorder?: number;
  /**
   * Extra delay of a reordered segment, ms; default 3. Negative makes it skip (part of) the
   * delay, as netem's `reorder` does: `delay: 5, reorder: 0.25, reorderDelay: -5`.
   */
  reorderDelay?: number;
  /** netem's correlation of successive reorder decisions (0..1). Default 0. */
  reorderCorrelation?: number;
  seed?: number;
}

export interface Transmission {
  readonly t: number;
  readonly from: Side;
  readonly seg: Segment;
  readonly dropped: boolean;
}

export type SynPolicy = 'accept' | 'refuse' | 'drop' | 'pending' | 'absent';

/** One end: records events and data, and can pump a source buffer through write/onWritable. */
export class Endpoint implements TcpHandler {
  conn: TcpConnection | null = null;
  readonly chunks: Buffer[] = [];
  receivedBytes = 0;
  readonly events: string[] = [];
  closeReason: CloseReason | null = null;
  established = false;
  ended = false;
  /** Consume delivered bytes at once (else the test calls conn.consume). */
  autoConsume = true;
  writableEvents = 0;
  private src: Buffer | null = null;
  private srcOff = 0;
  private shutdownWhenDone = false;

  constructor(
    readonly side: Side,
    private readonly net: Net,
  ) {}

  onEstablished(): void {
    this.established = true;
    this.events.push(`${this.net.now}:established`);
  }
  onData(chunk: Buffer): void {
    this.chunks.push(Buffer.from(chunk));
    this.receivedBytes += chunk.length;
    if (this.autoConsume) this.conn!.consume(chunk.length);
  }
  onEnd(): void {
    this.ended = true;
    this.events.push(`${this.net.now}:end`);
  }
  onWritable(): void {
    this.writableEvents++;
    this.pump();
  }
  onClose(reason: CloseReason): void {
    this.closeReason = reason;
    this.events.push(`${this.net.now}:close:${reason}`);
  }

  /** Writes `data` as fast as the send buffer allows, then shuts down if asked. */
  send(data: Buffer, shutdown = false): void {
    this.src = data;
    this.srcOff = 0;
    this.shutdownWhenDone = shutdown;
    this.pump();
  }

  get sendDone(): boolean {
    return this.src === null || this.srcOff >= this.src.length;
  }

  private pump(): void {
    const c = this.conn;
    if (c === null || this.src === null) return;
    while (this.srcOff < this.src.length) {
      const n = c.write(this.src.subarray(this.srcOff));
      if (n === 0) break;
      this.srcOff += n;
    }
    if (this.srcOff >= this.src.length && this.shutdownWhenDone) {
      this.shutdownWhenDone = false;
      c.shutdown();
    }
  }

  data(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

interface Pending {
  at: number;
  n: number;
  to: Side;
  seg: Segment;
}

interface Timer {
  at: number;
  n: number;
  fn: () => void;
}

export interface NetConfig {
  link?: LinkConfig;
  /** Link config per direction, overriding `link` (e.g. loss only a→b). */
  aToB?: LinkConfig;
  bToA?: LinkConfig;
  a?: Partial<TcpConnectionOptions>;
  b?: Partial<TcpConnectionOptions>;
  synPolicy?: SynPolicy;
  /** Answer segments for no live connection with RST, as an owner would. Default true. */
  rstWhenClosed?: boolean;
}

function cloneSeg(seg: Segment): Segment {
  return {
    seq: seg.seq,
    ack: seg.ack,
    flags: seg.flags,
    window: seg.window,
    options: seg.options,
    payload: Buffer.from(seg.payload),
  };
}

/** The simulated network and fake clock. */
export class Net {
  now = 0;
  readonly a: Endpoint;
  readonly b: Endpoint;
  readonly log: Transmission[] = [];
  /** Return false to drop a segment (on top of random loss). */
  filter: ((from: Side, seg: Segment, net: Net) => boolean) | null = null;
  synPolicy: SynPolicy;
  private readonly queue: Pending[] = [];
  private readonly timers: Timer[] = [];
  private n = 0;
  private readonly rngAB: Rng;
  private readonly rngBA: Rng;
  private readonly linkAB: Required<LinkConfig>;
  private readonly linkBA: Required<LinkConfig>;
  /** netem's correlated-random state per direction. */
  private lastAB = 0;
  private lastBA = 0;

  constructor(private readonly cfg: NetConfig = {}) {
    this.a = new Endpoint('a', this);
    this.b = new Endpoint('b', this);
    this.synPolicy = cfg.synPolicy ?? 'accept';
    const base: Required<LinkConfig> = {
      delay: 5,
      jitter: 0,
      loss: 0,
      dup: 0,
      reorder: 0,
      reorderDelay: 3,
      reorderCorrelation: 0,
      seed: 1,
      ...cfg.link,
    };
    this.linkAB = { ...base, ...cfg.aToB };
    this.linkBA = { ...base, ...cfg.bToA };
    this.rngAB = new Rng(this.linkAB.seed);
    this.rngBA = new Rng(this.linkBA.seed ^ 0x9e3779b9);
  }

  options(side: Side): TcpConnectionOptions {
    const ep = side === 'a' ? this.a : this.b;
    return {
      rtoMin: 200,
      ...(side === 'a' ? this.cfg.a : this.cfg.b),
      emit: (seg) => this.transmit(side, seg),
      handler: ep,
      clock: () => this.now,
    };
  }

  /** Side a opens a connection to side b. */
  connect(): TcpConnection {
    this.a.conn = TcpConnection.connect(this.options('a'), this.now);
    return this.a.conn;
  }

  /** Connects and runs until both ends are established (throws otherwise). */
  establish(limit = 10_000): void {
    this.connect();
    this.runUntil(() => this.a.established && this.b.established, limit, 'handshake');
  }

  /** Feeds a hand-made segment to a side's connection now, bypassing the link. */
  inject(to: Side, seg: Segment): void {
    this.deliver(to, seg);
  }

  at(t: number, fn: () => void): void {
    const timer = { at: t, n: this.n++, fn };
    let i = this.timers.length;
    while (i > 0 && (this.timers[i - 1]!.at > t || (this.timers[i - 1]!.at === t && this.timers[i - 1]!.n > timer.n))) i--;
    this.timers.splice(i, 0, timer);
  }

  /** Transmissions from a side (optionally only those that carried payload). */
  sent(from: Side, withData = false): Transmission[] {
    return this.log.filter((x) => x.from === from && (!withData || x.seg.payload.length > 0));
  }

  trace(last = 40): string {
    return this.log
      .slice(-last)
      .map((x) => `${x.t} ${x.from}→ ${describeSegment(x.seg)}${x.dropped ? ' (dropped)' : ''}`)
      .join('\n');
  }

  private transmit(from: Side, seg0: Segment): void {
    const seg = cloneSeg(seg0);
    const link = from === 'a' ? this.linkAB : this.linkBA;
    const rng = from === 'a' ? this.rngAB : this.rngBA;
    let dropped = this.filter !== null && !this.filter(from, seg, this);
    if (!dropped && link.loss > 0 && rng.next() < link.loss) dropped = true;
    this.log.push({ t: this.now, from, seg, dropped });
    if (dropped) return;
    const copies = link.dup > 0 && rng.next() < link.dup ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      let at = this.now + link.delay;
      if (link.jitter > 0) at += rng.next() * link.jitter;
      if (link.reorder > 0 && this.crandom(from, link, rng) < link.reorder) at += link.reorderDelay;
      this.enqueue({ at, n: this.n++, to: from === 'a' ? 'b' : 'a', seg });
    }
  }

  /** netem's get_crandom(): (1 − ρ)·rnd + ρ·last; plain rnd when ρ = 0. */
  private crandom(from: Side, link: Required<LinkConfig>, rng: Rng): number {
    const rho = link.reorderCorrelation;
    const r = rng.next();
    if (rho === 0) return r;
    const v = (1 - rho) * r + rho * (from === 'a' ? this.lastAB : this.lastBA);
    if (from === 'a') this.lastAB = v;
    else this.lastBA = v;
    return v;
  }

  private enqueue(p: Pending): void {
    const q = this.queue;
    let lo = 0;
    let hi = q.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const m = q[mid]!;
      if (m.at < p.at || (m.at === p.at && m.n < p.n)) lo = mid + 1;
      else hi = mid;
    }
    q.splice(lo, 0, p);
  }

  private deliver(to: Side, seg: Segment): void {
    const ep = to === 'a' ? this.a : this.b;
    const c = ep.conn;
    if (c !== null && !c.closed) {
      if (c.input(seg, this.now)) return;
      // A SYN that reopens a TIME-WAIT 4-tuple: fall through to a new connection.
    }
    const isSyn = (seg.flags & (SYN | ACK | RST)) === SYN;
    if (to === 'b' && isSyn && this.synPolicy !== 'absent') {
      const conn = TcpConnection.fromSyn(seg, this.options('b'), this.now);
      ep.conn = conn;
      if (this.synPolicy === 'accept') conn.accept();
      else if (this.synPolicy === 'refuse') conn.refuse();
      else if (this.synPolicy === 'drop') conn.drop();
      return;
    }
    if (this.cfg.rstWhenClosed !== false && !(to === 'b' && this.synPolicy === 'absent')) {
      const r = resetFor(seg);
      if (r !== null) this.transmit(to, r);
    }
  }

  private nextTime(): number | null {
    let t = Infinity;
    if (this.queue.length > 0) t = this.queue[0]!.at;
    if (this.timers.length > 0) t = Math.min(t, this.timers[0]!.at);
    for (const ep of [this.a, this.b]) {
      const d = ep.conn?.nextDeadline();
      if (d !== undefined && d !== null) t = Math.min(t, d);
    }
    return t === Infinity ? null : t;
  }

  /** Handles everything due at the next event time; false when nothing is left to do. */
  step(limit = Infinity): boolean {
    const t = this.nextTime();
    if (t === null || t > limit) return false;
    if (t > this.now) this.now = t;
    const now = this.now;
    let spins = 0;
    for (;;) {
      if (++spins > 100_000) throw new Error(`livelock at t=${now}\n${this.trace()}`);
      if (this.queue.length > 0 && this.queue[0]!.at <= now) {
        const p = this.queue.shift()!;
        this.deliver(p.to, p.seg);
        continue;
      }
      if (this.timers.length > 0 && this.timers[0]!.at <= now) {
        this.timers.shift()!.fn();
        continue;
      }
      let polled = false;
      for (const ep of [this.a, this.b]) {
        const c = ep.conn;
        const d = c?.nextDeadline();
        if (c && d !== undefined && d !== null && d <= now) {
          c.poll(now);
          const d2 = c.nextDeadline();
          if (d2 !== null && d2 <= now) throw new Error(`poll(${now}) left deadline ${d2} on ${ep.side}`);
          polled = true;
        }
      }
      if (!polled) return true;
    }
  }

  /** Runs until `pred` holds; throws with a trace if time passes `limit` first. */
  runUntil(pred: () => boolean, limit: number, what = 'condition'): void {
    while (!pred()) {
      if (!this.step(limit)) {
        throw new Error(`${what} not reached by t=${limit} (now ${this.now})\n${this.trace()}`);
      }
    }
  }

  /** Runs every event up to time `t`, then sets the clock to `t`. */
  runTo(t: number): void {
    while (this.step(t));
    if (this.now < t) this.now = t;
  }
}

/** A SYN as a VM would send it. */
export function makeSyn(seq: number, options: Segment['options'] = { mss: 1460, wscale: 7, sackPermitted: true, ts: [1000, 0] }): Segment {
  return { seq, ack: 0, flags: SYN, window: 64240, options, payload: Buffer.alloc(0) };
}
