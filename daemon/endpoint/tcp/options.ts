/**
 * Connection options and their defaults. Times are in milliseconds of whatever clock the owner
 * passes as `now` (only differences matter, except for the RFC 6528 ISN clock).
 */
import type { Segment } from './segment.js';
import { randomU32 } from './isn.js';
import type { CongestionAlgorithm } from './congestion.js';

export type CloseReason = 'normal' | 'reset' | 'timeout' | 'refused' | 'aborted';

/**
 * Events for the owner. Implement the ones needed (an object or a class instance, so the hot
 * path calls a method instead of dispatching through an emitter). Handlers may call back into
 * the connection (write, consume, shutdown, abort); they are never called from inside `emit`.
 */
export interface TcpHandler {
  /** The three-way handshake completed. */
  onEstablished?(): void;
  /**
   * In-order bytes. The chunk may be a view of the payload passed to `input()` (no copy):
   * copy it if the owner recycles its frame buffers before it is done with the chunk. The
   * bytes occupy the receive buffer (and shrink the advertised window) until `consume()`.
   */
  onData?(chunk: Buffer): void;
  /** The peer sent FIN: no more data will come (after every onData). */
  onEnd?(): void;
  /** `write()` had returned less than asked, and there is room again. */
  onWritable?(): void;
  /** Exactly once, last. */
  onClose?(reason: CloseReason): void;
}

export interface KeepaliveOptions {
  /** Idle time before the first probe. */
  readonly idle: number;
  /** Between unanswered probes. */
  readonly interval: number;
  /** Unanswered probes before the connection is reset. */
  readonly count: number;
}

export interface TcpConnectionOptions {
  /** Where segments go. Called synchronously; must not call back into this connection. */
  readonly emit: (seg: Segment) => void;
  readonly handler?: TcpHandler;
  /**
   * The owner's clock, read by the calls that carry no `now` (write, consume, shutdown,
   * abort, accept, refuse). Without it they use the `now` of the last input/poll.
   */
  readonly clock?: () => number;
  /** Our MSS, from the MTU (e.g. 1460 for IPv4 on a 1500 MTU). Default 1460. */
  readonly mss?: number;
  /** MSS assumed when the peer's SYN has none (RFC 9293: 536 for IPv4, 1220 for IPv6). */
  readonly defaultPeerMss?: number;
  /** Receive buffer; the advertised window is its free space. Default 256 KiB. */
  readonly rcvBuf?: number;
  /** Send buffer; `write()` takes at most its free space. Default 256 KiB. */
  readonly sndBuf?: number;
  /** Window scale shift to offer; default the smallest that covers rcvBuf; null: none. */
  readonly wscale?: number | null;
  /** Offer/accept SACK (RFC 2018). Default true. */
  readonly sack?: boolean;
  /** Offer/accept timestamps (RFC 7323). Default true. */
  readonly timestamps?: boolean;
  /** Keepalive; null disables. Default idle 10 min, interval 60 s, 5 probes. */
  readonly keepalive?: KeepaliveOptions | null;
  /** SYN retransmissions before an active open gives up. Default 6 (1+2+…+64 s = 127 s). */
  readonly synRetries?: number;
  /** SYN-ACK retransmissions before a passive open gives up. Default 5. */
  readonly synAckRetries?: number;
  /** TIME-WAIT duration (2·MSL). Default 60 s. */
  readonly timeWait?: number;
  /**
   * FIN-WAIT-2 idle limit (restarted by every segment from the peer); null: none, the default,
   * because shutdown() is a half-close and the peer may legitimately send for a long time
   * (keepalive still detects a peer that vanished). Set it when nothing more is wanted.
   */
  readonly finWait2Timeout?: number | null;
  /** Unacknowledged data (or unanswered window probes) for this long closes with 'timeout'. Default 120 s. */
  readonly userTimeout?: number;
  readonly rtoInitial?: number;
  readonly rtoMin?: number;
  readonly rtoMax?: number;
  /** Delayed-ACK timeout; 0 acknowledges every segment at once. Default 40 ms. */
  readonly delayedAck?: number;
  /** Limit on out-of-order pieces held. Default max(64, 2·rcvBuf/mss). */
  readonly maxOooPieces?: number;
  /** ISN for this connection (bind the 4-tuple: `now => isnGen(tuple, now)`); default random. */
  readonly isn?: (now: number) => number;
  /** Congestion control; default the process-wide one (`setDefaultCongestion`, initially CUBIC). */
  readonly congestion?: CongestionAlgorithm;
}

export interface ResolvedOptions {
  readonly mss: number;
  readonly defaultPeerMss: number;
  readonly rcvBuf: number;
  readonly sndBuf: number;
  readonly wscale: number | null;
  readonly sack: boolean;
  readonly timestamps: boolean;
  readonly keepalive: KeepaliveOptions | null;
  readonly synRetries: number;
  readonly synAckRetries: number;
  readonly timeWait: number;
  readonly finWait2Timeout: number | null;
  readonly userTimeout: number;
  readonly rtoInitial: number;
  readonly rtoMin: number;
  readonly rtoMax: number;
  readonly delayedAck: number;
  readonly maxOooPieces: number;
  readonly isn: (now: number) => number;
  readonly congestion: CongestionAlgorithm;
}

let defaultCongestion: CongestionAlgorithm = 'cubic';

/**
 * The congestion control of connections made from now on without an explicit `congestion`
 * (the daemon's `tcp.congestion`, applied at start and on reload; open connections keep theirs).
 */
export function setDefaultCongestion(alg: CongestionAlgorithm): void {
  defaultCongestion = alg;
}

export function getDefaultCongestion(): CongestionAlgorithm {
  return defaultCongestion;
}

export const DEFAULT_KEEPALIVE: KeepaliveOptions = Object.freeze({ idle: 600_000, interval: 60_000, count: 5 });

/** The smallest shift with which `buf` fits the 16-bit window field (at most 14). */
export function scaleFor(buf: number): number {
  let s = 0;
  while (s < 14 && buf / 2 ** s > 0xffff) s++;
  return s;
}

export function resolveOptions(o: TcpConnectionOptions): ResolvedOptions {
  const mss = Math.max(64, Math.min(0xffff, Math.floor(o.mss ?? 1460)));
  const rcvBuf = Math.max(1, Math.min(2 ** 30, Math.floor(o.rcvBuf ?? 256 * 1024)));
  const sndBuf = Math.max(1, Math.floor(o.sndBuf ?? 256 * 1024));
  const wscale = o.wscale === null ? null : Math.max(0, Math.min(14, o.wscale ?? scaleFor(rcvBuf)));
  return {
    mss,
    defaultPeerMss: o.defaultPeerMss ?? 536,
    rcvBuf,
    sndBuf,
    wscale,
    sack: o.sack ?? true,
    timestamps: o.timestamps ?? true,
    keepalive: o.keepalive === undefined ? DEFAULT_KEEPALIVE : o.keepalive,
    synRetries: o.synRetries ?? 6,
    synAckRetries: o.synAckRetries ?? 5,
    timeWait: o.timeWait ?? 60_000,
    finWait2Timeout: o.finWait2Timeout ?? null,
    userTimeout: o.userTimeout ?? 120_000,
    rtoInitial: o.rtoInitial ?? 1000,
    rtoMin: o.rtoMin ?? 200,
    rtoMax: o.rtoMax ?? 60_000,
    delayedAck: o.delayedAck ?? 40,
    maxOooPieces: o.maxOooPieces ?? Math.max(64, Math.ceil((2 * rcvBuf) / mss)),
    isn: o.isn ?? (() => randomU32()),
    congestion: o.congestion ?? defaultCongestion,
  };
}
