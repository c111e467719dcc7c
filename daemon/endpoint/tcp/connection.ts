/**
 * One TCP connection (RFC 9293), as a clock-driven state machine: segments come in through
 * `input(seg, now)`, go out through the `emit` callback, timers fire from `poll(now)` and
 * `nextDeadline()` says when to call it next. No I/O and no setTimeout here.
 *
 * The owner keeps the 4-tuple → connection table. A VM's SYN makes a connection with
 * `fromSyn()` that stays unanswered until the owner calls `accept()` (SYN-ACK), `refuse()`
 * (RST) or `drop()` (silence). `connect()` opens one into the VM.
 *
 * Implemented: §3.10 segment processing with the RFC 5961 RST/SYN/ACK checks; window scaling,
 * timestamps with PAWS (RFC 7323); SACK (RFC 2018) both ways; RFC 6298 RTO with Karn;
 * RFC 5681 slow start / congestion avoidance with IW10 (RFC 6928). Loss recovery with SACK:
 * RACK-TLP loss detection (RFC 8985) with a reordering window that adapts to DSACKs, RFC 6675
 * recovery (every segment deemed lost is resent, new data goes on as the pipe allows) with
 * Proportional Rate Reduction (RFC 6937), and undo of spurious reductions detected by DSACK
 * (RFC 2883/3708) or timestamps (Eifel, RFC 3522/4015). Without SACK: fast retransmit and
 * NewReno fast recovery (RFC 6582) with limited transmit (RFC 3042). The receiver sends DSACK.
 * Zero-window probes; keepalive; delayed ACK (every second segment or 40 ms); receiver and
 * sender silly-window avoidance.
 */
import { newCongestionControl, type CongestionAlgorithm, type CongestionControl } from './congestion.js';
import { randomU32 } from './isn.js';
import {
  resolveOptions,
  type CloseReason,
  type ResolvedOptions,
  type TcpConnectionOptions,
  type TcpHandler,
} from './options.js';
import { Reassembly } from './reassembly.js';
import { RtoEstimator } from './rto.js';
import { ACK, EMPTY_PAYLOAD, FIN, NO_OPTIONS, PSH, RST, SYN, type SackRange, type Segment, type SegmentOptions } from './segment.js';
import { SendBuffer } from './send-buffer.js';
import { seqAdd, seqDiff, seqGe, seqGt, seqInWindow, seqLe, seqLt, seqMax } from './seq.js';
import { EVER, LOST, RETRANS, SACKED, TxQueue, type TxRecord } from './tx-queue.js';

export type TcpState =
  | 'SYN-PENDING'
  | 'SYN-SENT'
  | 'SYN-RECEIVED'
  | 'ESTABLISHED'
  | 'FIN-WAIT-1'
  | 'FIN-WAIT-2'
  | 'CLOSE-WAIT'
  | 'CLOSING'
  | 'LAST-ACK'
  | 'TIME-WAIT'
  | 'CLOSED';

// Internal state codes (numbers compare faster than strings on the hot path).
const PENDING = 0; // SYN received, not answered yet: the owner decides
const SYN_SENT = 1;
const SYN_RECEIVED = 2;
const ESTABLISHED = 3;
const FIN_WAIT_1 = 4;
const FIN_WAIT_2 = 5;
const CLOSE_WAIT = 6;
const CLOSING = 7;
const LAST_ACK = 8;
const TIME_WAIT = 9;
const CLOSED = 10;

const noop = (): void => {};

/**
 * A segment resent in an undo episode: [start, end), the copies resent (since `firstAt`), the
 * DSACKs for it, and whether its original is known to have arrived.
 */
interface UndoEntry {
  readonly start: number;
  readonly end: number;
  readonly firstAt: number;
  copies: number;
  dsacks: number;
  /** Not needed: the original arrived (a DSACK per copy, or Eifel's timestamp check). */
  spurious: boolean;
}

/** Retransmissions one undo episode keeps track of; beyond that it gives up on undo. */
const UNDO_LOG_MAX = 1024;

const STATE_NAMES: readonly TcpState[] = [
  'SYN-PENDING',
  'SYN-SENT',
  'SYN-RECEIVED',
  'ESTABLISHED',
  'FIN-WAIT-1',
  'FIN-WAIT-2',
  'CLOSE-WAIT',
  'CLOSING',
  'LAST-ACK',
  'TIME-WAIT',
  'CLOSED',
];

/** Bytes the timestamp option takes in every segment once negotiated (RFC 6691: MSS excludes it). */
const TS_OPTION_LEN = 12;
const NONE = Infinity;
/**
 * PAWS lets a TSval this many ticks (ms) behind TS.Recent through, as Linux does
 * (TCP_PAWS_WINDOW): a reordered segment sent in the same or previous millisecond as one that
 * advanced TS.Recent (e.g. a retransmission that overtook it) is no old duplicate.
 */
const PAWS_WINDOW = 1;
/** RACK's reordering window multiplier stays raised for this many recoveries after a DSACK (RFC 8985 §6.2). */
const REO_WND_PERSIST = 16;
/** Extra tail-loss-probe delay when one segment is in flight: the peer may be delaying its ACK (RFC 8985 §7.2). */
const TLP_DELACK = 200;

export interface TcpStats {
  segsIn: number;
  segsOut: number;
  /** Payload bytes delivered in order to the owner. */
  bytesIn: number;
  /** New payload bytes sent (retransmissions excluded). */
  bytesOut: number;
  /** Segments sent again (by timeout, fast retransmit, loss recovery or tail loss probe). */
  retransmits: number;
  /** Loss recoveries entered (fast retransmit; with SACK, RACK detecting a loss). */
  fastRetransmits: number;
  rtoTimeouts: number;
  /** Tail loss probes sent (RFC 8985 §7). */
  tlpProbes: number;
  /** Segments RACK deemed lost (each transmission counts). */
  rackLost: number;
  /** Window reductions undone as spurious (DSACK or timestamps showed no loss). */
  undos: number;
  /** DSACK blocks received / sent (RFC 2883). */
  dsacksIn: number;
  dsacksOut: number;
  persistProbes: number;
  keepaliveProbes: number;
  dupAcksIn: number;
  /** Segments outside the receive window (answered with an ACK). */
  unacceptable: number;
  challengeAcks: number;
  pawsDrops: number;
  oooSegments: number;
  /** Out-of-order data dropped because the reassembly queue was full. */
  oooDrops: number;
  windowUpdates: number;
}

/** Sequence-space variables, for diagnostics and tests. */
export interface TcpSnapshot {
  readonly state: TcpState;
  readonly iss: number;
  readonly irs: number;
  readonly sndUna: number;
  readonly sndNxt: number;
  readonly sndMax: number;
  /** Peer's window in bytes (scaled). */
  readonly sndWnd: number;
  readonly rcvNxt: number;
  /** Window last advertised, in bytes. */
  readonly rcvWnd: number;
  readonly cwnd: number;
  readonly ssthresh: number;
  readonly rto: number;
  readonly srtt: number;
  readonly inRecovery: boolean;
  readonly sndBuffered: number;
  /** Send-buffer memory held (it grows with what is buffered, from a small first chunk). */
  readonly sndAllocated: number;
  readonly rcvUnconsumed: number;
  readonly oooBytes: number;
}

/** What the handshake settled. */
export interface TcpNegotiated {
  /** Payload bytes per segment we send (peer MSS ∧ ours, less the timestamp option). */
  readonly mss: number;
  readonly peerMss: number;
  /** Shift applied to the peer's window field / to ours (0 unless both sides sent wscale). */
  readonly sndScale: number;
  readonly rcvScale: number;
  readonly sack: boolean;
  readonly timestamps: boolean;
}

function newStats(): TcpStats {
  return {
    segsIn: 0,
    segsOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    retransmits: 0,
    fastRetransmits: 0,
    rtoTimeouts: 0,
    tlpProbes: 0,
    rackLost: 0,
    undos: 0,
    dsacksIn: 0,
    dsacksOut: 0,
    persistProbes: 0,
    keepaliveProbes: 0,
    dupAcksIn: 0,
    unacceptable: 0,
    challengeAcks: 0,
    pawsDrops: 0,
    oooSegments: 0,
    oooDrops: 0,
    windowUpdates: 0,
  };
}

export class TcpConnection {
  /** The owner's event sink; may be replaced at any time. */
  handler: TcpHandler;
  readonly stats: TcpStats = newStats();

  private st = CLOSED;
  private readonly cfg: ResolvedOptions;
  private readonly emitFn: (seg: Segment) => void;
  private readonly clock: (() => number) | null;
  private now: number;

  // Send side (RFC 9293 §3.3.1 names). SND.MAX is the highest sequence number sent; SND.NXT is
  // the next new one (equal to SND.MAX: retransmissions go through the tx queue).
  private iss = 0;
  private sndUna = 0;
  private sndNxt = 0;
  private sndMax = 0;
  private sndWnd = 0;
  private sndWl1 = 0;
  private sndWl2 = 0;
  private maxSndWnd = 0;
  private sndScale = 0;
  private readonly sndBuf: SendBuffer;
  /** Sequence number of the first byte in sndBuf. */
  private sndBufSeq = 0;
  private finQueued = false;
  private mss: number;
  private peerMss: number;

  // Receive side.
  private irs = 0;
  private synLen = 1;
  private rcvNxt = 0;
  /** Right edge of the window last advertised (RCV.NXT + RCV.WND); never moves left. */
  private rcvAdv = 0;
  private rcvScale = 0;
  private unconsumed = 0;
  private readonly ooo: Reassembly;
  /** A duplicate segment to report in the next ACK's first SACK block (RFC 2883), or null. */
  private dsack: SackRange | null = null;
  private lastAckSent = 0;
  private pendingAcks = 0;
  private ackNow = false;

  // Options.
  private tsOk = false;
  private tsRecent = 0;
  private readonly tsOffset: number;
  private sackOk = false;
  private offerWscale: boolean;

  // Timers: absolute deadlines, NONE when off.
  private rtxAt = NONE;
  private persistAt = NONE;
  private keepAt = NONE;
  private delackAt = NONE;
  private stateAt = NONE;
  /** RACK reordering timer (RFC 8985 §6.2 step 5). */
  private reoAt = NONE;
  /** Tail loss probe timer (RFC 8985 §7.2). */
  private tlpAt = NONE;
  private persistShift = 0;
  private keepProbes = 0;
  private lastRecvAt: number;
  private lastSendAt: number;
  private synRetransmits = 0;
  private unackedSince = 0;

  // Loss recovery.
  private readonly rto: RtoEstimator;
  private readonly cc: CongestionControl;
  private rttStart = 0;
  private dupAcks = 0;
  /** End of what was last retransmitted in this NewReno recovery episode (no SACK). */
  private rtxHigh = 0;
  /** Every segment in flight, with its SACK/loss/retransmission state. */
  private readonly txq = new TxQueue();

  // RACK (RFC 8985): the most recently sent segment known delivered, and the reordering window.
  private rackXmitSeq = 0;
  private rackRtt = 0;
  /** Highest end of delivered data (RACK.fack). */
  private rackFack = 0;
  private minRtt = Infinity;
  private reordSeen = false;
  /** The largest reordering delay measured (ms) since reordering was last absent for a while. */
  private reoExtent = 0;
  private reoWndMult = 1;
  private reoWndPersist = 0;
  /** SND.MAX when the multiplier last grew: it grows at most once per round trip. */
  private dsackRound: number | null = null;
  /** TSecr of the ACK being processed, for RACK's retransmission ambiguity check. */
  private ackTsecr: number | undefined = undefined;
  /** RACK.fack before the ACK being processed (reordering is judged against it). */
  private priorFack = 0;

  // Tail loss probe.
  /** SND.MAX when the probe was sent, while its outcome is open; null when none. */
  private tlpEnd: number | null = null;
  private tlpRetrans = false;

  // Undo of spurious reductions (RFC 3522/3708/4015, after Linux's undo_marker/undo_retrans).
  /** SND.UNA when the reduction began; null when there is nothing to undo. */
  private undoMarker: number | null = null;
  /** This episode's retransmissions. */
  private undoLog: UndoEntry[] = [];
  /** Entries of undoLog not (yet) shown spurious. */
  private undoUnproven = 0;
  /** Time of the latest retransmission in this episode. */
  private lastRetransAt = 0;
  /** The next record this ACK acknowledges cumulatively is the one that filled the hole. */
  private holeFiller = false;

  /** The last send attempt stopped at cwnd with data waiting (cwnd may grow: RFC 7661). */
  private cwndLimited = false;
  private inInput = false;
  private wantWritable = false;
  private notifyWritable = false;

  private constructor(opts: TcpConnectionOptions, now: number) {
    this.cfg = resolveOptions(opts);
    this.emitFn = opts.emit;
    this.handler = opts.handler ?? {};
    this.clock = opts.clock ?? null;
    this.now = now;
    this.lastRecvAt = now;
    this.lastSendAt = now;
    this.sndBuf = new SendBuffer(this.cfg.sndBuf);
    this.ooo = new Reassembly(this.cfg.maxOooPieces);
    this.rto = new RtoEstimator({ initial: this.cfg.rtoInitial, min: this.cfg.rtoMin, max: this.cfg.rtoMax });
    this.mss = this.cfg.mss;
    this.peerMss = this.cfg.defaultPeerMss;
    this.cc = newCongestionControl(this.cfg.congestion, this.mss, 0);
    this.offerWscale = this.cfg.wscale !== null;
    this.tsOffset = this.cfg.timestamps ? randomU32() : 0;
  }

  /**
   * A connection for a SYN from the VM (no ACK, no RST). It answers nothing until the owner
   * calls `accept()`, `refuse()` or `drop()`.
   */
  static fromSyn(syn: Segment, opts: TcpConnectionOptions, now: number): TcpConnection {
    if ((syn.flags & (SYN | ACK | RST)) !== SYN) throw new TypeError('fromSyn: not a SYN');
    const c = new TcpConnection(opts, now);
    c.st = PENDING;
    c.stats.segsIn++;
    c.irs = syn.seq;
    c.synLen = 1 + syn.payload.length + (syn.flags & FIN ? 1 : 0);
    c.rcvNxt = seqAdd(syn.seq, 1); // data on the SYN is not taken; the VM sends it again
    c.negotiate(syn.options, true);
    return c;
  }

  /** An active open into the VM: sends SYN now, retransmits it, gives up after `synRetries`. */
  static connect(opts: TcpConnectionOptions, now: number): TcpConnection {
    const c = new TcpConnection(opts, now);
    c.st = SYN_SENT;
    c.chooseIss();
    c.sendSyn();
    c.rtxAt = now + c.rto.rto;
    return c;
  }

  // ---------------------------------------------------------------------------------------
  // Owner's decisions on a pending SYN.

  /** Answers the pending SYN with SYN-ACK. */
  accept(): void {
    if (this.st !== PENDING) return;
    this.tick();
    this.chooseIss();
    this.st = SYN_RECEIVED;
    this.sendSynAck();
    this.rtxAt = this.now + this.rto.rto;
  }

  /** Answers the pending SYN with RST (the port looks closed); closes with 'refused'. */
  refuse(): void {
    if (this.st !== PENDING) return;
    this.tick();
    this.emitRaw(0, seqAdd(this.irs, this.synLen), RST | ACK);
    this.finish('refused');
  }

  /** Never answers the pending SYN (the destination looks unreachable); closes with 'timeout'. */
  drop(): void {
    if (this.st !== PENDING) return;
    this.finish('timeout');
  }

  // ---------------------------------------------------------------------------------------
  // Application side.

  /**
   * Copies up to the free send-buffer space; returns how many bytes were taken. When it
   * returns less than `data.length`, `onWritable` fires once there is room. Data written
   * before the connection is established is sent once it is. 0 after shutdown/close.
   */
  write(data: Uint8Array): number {
    if (this.st === CLOSED || this.finQueued || this.st === TIME_WAIT) return 0;
    const n = this.sndBuf.write(data);
    if (n < data.length) this.wantWritable = true;
    if (n > 0) {
      this.tick();
      this.trySend(false);
    }
    return n;
  }

  /** Free space in the send buffer. */
  get writable(): number {
    return this.st === CLOSED || this.finQueued ? 0 : this.sndBuf.free;
  }

  /**
   * The owner is done with `n` bytes delivered by onData: they leave the receive buffer and
   * the window opens (a window update is sent once it opened by min(rcvBuf/2, MSS)).
   */
  consume(n: number): void {
    if (n <= 0 || this.st === CLOSED) return;
    this.unconsumed = Math.max(0, this.unconsumed - n);
    if (this.st !== ESTABLISHED && this.st !== FIN_WAIT_1 && this.st !== FIN_WAIT_2) return;
    // Called from onData inside input(): the ACK that input() sends carries the new window.
    if (this.inInput) return;
    const free = this.cfg.rcvBuf - this.unconsumed;
    const grow = seqDiff(seqAdd(this.rcvNxt, free), this.rcvAdv);
    if (grow >= this.rcvThreshold()) {
      this.tick();
      this.stats.windowUpdates++;
      this.sendAck();
    }
  }

  /** Bytes delivered by onData and not yet consumed. */
  get unconsumedBytes(): number {
    return this.unconsumed;
  }

  /** Half-close: FIN after everything written so far. Reading goes on until onEnd. */
  shutdown(): void {
    if (this.st === CLOSED || this.finQueued) return;
    this.tick();
    this.finQueued = true;
    if (this.st === ESTABLISHED) this.st = FIN_WAIT_1;
    else if (this.st === CLOSE_WAIT) this.st = LAST_ACK;
    // In the handshake states the FIN goes out once established.
    this.trySend(false);
  }

  /** Sends RST (where there is a peer to tell) and closes with 'aborted'. */
  abort(): void {
    const st = this.st;
    if (st === CLOSED) return;
    this.tick();
    if (st === PENDING) this.emitRaw(0, seqAdd(this.irs, this.synLen), RST | ACK);
    else if (st !== SYN_SENT && st !== TIME_WAIT) this.emitRaw(this.sndNxt, this.rcvNxt, RST | ACK);
    this.finish('aborted');
  }

  // ---------------------------------------------------------------------------------------
  // Segments and timers.

  /**
   * Processes one segment from the peer. Returns false only when it is a SYN that may open a
   * new connection on this 4-tuple (it arrived in TIME-WAIT, RFC 6191): this connection has
   * then closed, and the owner should hand the SYN to a new one.
   */
  input(seg: Segment, now: number): boolean {
    if (this.st === CLOSED) return true;
    this.now = now;
    this.stats.segsIn++;
    this.inInput = true;
    let more: boolean;
    try {
      more = this.dispatch(seg);
    } finally {
      this.inInput = false;
    }
    this.flush();
    return more;
  }

  private dispatch(seg: Segment): boolean {
    switch (this.st) {
      case PENDING:
        if (seg.flags & RST && seg.seq === this.rcvNxt) this.finish('reset');
        return true;
      case SYN_SENT:
        this.inputSynSent(seg);
        break;
      case TIME_WAIT:
        if ((seg.flags & (SYN | ACK | RST)) === SYN && this.reusableBy(seg)) {
          this.finish('normal');
          return false;
        }
        this.inputSynchronized(seg);
        break;
      default:
        this.inputSynchronized(seg);
    }
    return true;
  }

  /** Fires the timers that are due. */
  poll(now: number): void {
    if (this.st === CLOSED) return;
    this.now = now;
    if (this.delackAt <= now) {
      this.delackAt = NONE;
      if (this.pendingAcks > 0) this.sendAck();
    }
    if (this.rtxAt <= now) this.onRetransmitTimer();
    if (this.reoAt <= now && this.st !== CLOSED) this.onReorderTimer();
    if (this.tlpAt <= now && this.st !== CLOSED) this.onTlpTimer();
    if (this.persistAt <= now && this.st !== CLOSED) this.onPersistTimer();
    if (this.keepAt <= now && this.st !== CLOSED) this.onKeepaliveTimer();
    if (this.stateAt <= now && this.st !== CLOSED) this.onStateTimer();
  }

  /** When `poll` should next be called, or null when no timer runs. Re-read it after every call. */
  nextDeadline(): number | null {
    const t = Math.min(this.rtxAt, this.persistAt, this.keepAt, this.delackAt, this.stateAt, this.reoAt, this.tlpAt);
    return t === NONE ? null : t;
  }

  get state(): TcpState {
    return STATE_NAMES[this.st]!;
  }

  get closed(): boolean {
    return this.st === CLOSED;
  }

  /** The congestion control this connection runs. */
  get congestion(): CongestionAlgorithm {
    return this.cc.name;
  }

  get negotiated(): TcpNegotiated {
    return {
      mss: this.mss,
      peerMss: this.peerMss,
      sndScale: this.sndScale,
      rcvScale: this.rcvScale,
      sack: this.sackOk,
      timestamps: this.tsOk,
    };
  }

  snapshot(): TcpSnapshot {
    return {
      state: this.state,
      iss: this.iss,
      irs: this.irs,
      sndUna: this.sndUna,
      sndNxt: this.sndNxt,
      sndMax: this.sndMax,
      sndWnd: this.sndWnd,
      rcvNxt: this.rcvNxt,
      rcvWnd: Math.max(0, seqDiff(this.rcvAdv, this.rcvNxt)),
      cwnd: this.cc.cwnd,
      ssthresh: this.cc.ssthresh,
      rto: this.rto.rto,
      srtt: this.rto.srtt,
      inRecovery: this.cc.inRecovery,
      sndBuffered: this.sndBuf.length,
      sndAllocated: this.sndBuf.allocated,
      rcvUnconsumed: this.unconsumed,
      oooBytes: this.ooo.bytes,
    };
  }

  // ---------------------------------------------------------------------------------------
  // Handshake.

  private tick(): void {
    if (this.clock !== null) this.now = this.clock();
  }

  private chooseIss(): void {
    const iss = this.cfg.isn(this.now) >>> 0;
    this.iss = iss;
    this.sndUna = iss;
    this.sndNxt = seqAdd(iss, 1);
    this.sndMax = this.sndNxt;
    this.sndBufSeq = this.sndNxt;
    this.sndWl2 = iss;
    this.rtxHigh = this.sndNxt;
    this.rackFack = this.sndNxt;
    this.cc.recover = iss;
  }

  /** Applies the options of the peer's SYN. */
  private negotiate(o: SegmentOptions, passive: boolean): void {
    this.peerMss = o.mss !== undefined && o.mss > 0 ? o.mss : this.cfg.defaultPeerMss;
    this.sackOk = this.cfg.sack && o.sackPermitted === true;
    this.tsOk = this.cfg.timestamps && o.ts !== undefined;
    if (this.tsOk) this.tsRecent = o.ts![0];
    if (this.cfg.wscale !== null && o.wscale !== undefined) {
      this.sndScale = Math.min(14, o.wscale);
      this.rcvScale = this.cfg.wscale;
    } else {
      this.sndScale = 0;
      this.rcvScale = 0;
      if (passive) this.offerWscale = false;
    }
    this.mss = Math.max(1, Math.min(this.peerMss, this.cfg.mss) - (this.tsOk ? TS_OPTION_LEN : 0));
    this.cc.setMss(this.mss);
  }

  private synWindow(): number {
    return Math.min(this.cfg.rcvBuf, 0xffff);
  }

  private sendSyn(): void {
    const cfg = this.cfg;
    const o: { mss: number; wscale?: number; sackPermitted?: boolean; ts?: [number, number] } = { mss: cfg.mss };
    if (cfg.wscale !== null) o.wscale = cfg.wscale;
    if (cfg.sack) o.sackPermitted = true;
    if (cfg.timestamps) o.ts = [this.tsNow(), 0];
    this.rttStart = this.now;
    this.lastSendAt = this.now;
    this.stats.segsOut++;
    this.emitFn({ seq: this.iss, ack: 0, flags: SYN, window: this.synWindow(), options: o, payload: EMPTY_PAYLOAD });
  }

  private sendSynAck(): void {
    const o: { mss: number; wscale?: number; sackPermitted?: boolean; ts?: [number, number] } = { mss: this.cfg.mss };
    if (this.offerWscale && this.cfg.wscale !== null) o.wscale = this.cfg.wscale;
    if (this.sackOk) o.sackPermitted = true;
    if (this.tsOk) o.ts = [this.tsNow(), this.tsRecent];
    const window = this.synWindow();
    this.rcvAdv = seqAdd(this.rcvNxt, window);
    this.lastAckSent = this.rcvNxt;
    this.rttStart = this.now;
    this.lastSendAt = this.now;
    this.stats.segsOut++;
    this.emitFn({ seq: this.iss, ack: this.rcvNxt, flags: SYN | ACK, window, options: o, payload: EMPTY_PAYLOAD });
  }

  private inputSynSent(seg: Segment): void {
    const f = seg.flags;
    if (f & ACK && seg.ack !== seqAdd(this.iss, 1)) {
      if (!(f & RST)) this.emitRaw(seg.ack, 0, RST);
      return;
    }
    if (f & RST) {
      if (f & ACK) this.finish('refused');
      return;
    }
    if (!(f & SYN)) return;
    this.irs = seg.seq;
    this.rcvNxt = seqAdd(seg.seq, 1);
    this.rcvAdv = this.rcvNxt;
    this.lastAckSent = this.rcvNxt;
    this.negotiate(seg.options, false);
    if (f & ACK) {
      this.synAcked(seg);
      this.ackNow = true;
    } else {
      // Simultaneous open (RFC 9293 §3.5).
      this.st = SYN_RECEIVED;
      this.sendSynAck();
    }
  }

  /** Our SYN was acknowledged by `seg` (whose window is not scaled: it is a SYN or answers one). */
  private synAcked(seg: Segment): void {
    const ts = this.tsOk ? seg.options.ts : undefined;
    if (ts !== undefined && ts[1] !== 0) this.sampleRtt((this.tsNow() - ts[1]) >>> 0);
    else if (this.synRetransmits === 0) this.sampleRtt(this.now - this.rttStart);
    this.sndUna = seg.ack;
    const wnd = seg.flags & SYN ? seg.window : seg.window << this.sndScale;
    this.sndWnd = wnd;
    this.maxSndWnd = wnd;
    this.sndWl1 = seg.seq;
    this.sndWl2 = seg.ack;
    this.rtxAt = NONE;
    if (this.synRetransmits > 0) this.rto.afterSynTimeout();
    this.st = this.finQueued ? FIN_WAIT_1 : ESTABLISHED;
    this.lastRecvAt = this.now;
    if (this.cfg.keepalive !== null) this.keepAt = this.now + this.cfg.keepalive.idle;
    this.handler.onEstablished?.();
  }

  /** A SYN in TIME-WAIT may start a new incarnation if it is newer (RFC 6191). */
  private reusableBy(seg: Segment): boolean {
    const ts = seg.options.ts;
    if (this.tsOk && ts !== undefined) return seqGt(ts[0], this.tsRecent);
    return seqGt(seg.seq, this.rcvNxt);
  }

  // ---------------------------------------------------------------------------------------
  // Segment arrival in the synchronized states (RFC 9293 §3.10.7.4).

  private inputSynchronized(seg: Segment): void {
    const f = seg.flags;
    const now = this.now;
    this.lastRecvAt = now;
    this.keepProbes = 0;

    if (this.st === SYN_RECEIVED && f & SYN && seg.seq === this.irs && !(f & RST)) {
      // Our SYN-ACK was lost (the VM repeats its SYN), or simultaneous open completes.
      if (f & ACK && seg.ack === seqAdd(this.iss, 1)) {
        this.synAcked(seg);
        this.ackNow = true;
      } else this.sendSynAck();
      return;
    }

    const ts = this.tsOk ? seg.options.ts : undefined;
    let disordered = false;
    if (ts !== undefined && !(f & RST) && seqLt(ts[0], seqAdd(this.tsRecent, -PAWS_WINDOW))) {
      // PAWS (RFC 7323 §5): an old duplicate, unless it is a pure ACK the network reordered.
      disordered = this.disorderedAck(seg, ts[0]);
      if (!disordered) {
        this.stats.pawsDrops++;
        this.ackNow = true;
        // A copy of data already received (another copy overtook it): DSACK it (as Linux's
        // tcp_send_dupack does below RCV.NXT; here also when the out-of-order queue holds it),
        // else the sender never learns that its resend was needless.
        const len = seg.payload.length;
        if (this.sackOk && len > 0) {
          const end = seqAdd(seg.seq, len);
          if (seqLt(seg.seq, this.rcvNxt)) this.dsack = [seg.seq, seqLt(end, this.rcvNxt) ? end : this.rcvNxt];
          else if (this.ooo.holds(seg.seq, len)) this.dsack = [seg.seq, end];
        }
        return;
      }
    }

    // Acceptability (§3.10.7.4 first check).
    let seq = seg.seq;
    let data = seg.payload;
    let fin = (f & FIN) !== 0;
    const segLen = data.length + (f & SYN ? 1 : 0) + (fin ? 1 : 0);
    const wnd = Math.max(0, seqDiff(this.rcvAdv, this.rcvNxt));
    let ok: boolean;
    if (segLen === 0) ok = wnd === 0 ? seq === this.rcvNxt : seqInWindow(seq, this.rcvNxt, wnd);
    else if (wnd === 0) ok = seq === this.rcvNxt; // keep its ACK (and RST); the data is trimmed away
    else ok = seqInWindow(seq, this.rcvNxt, wnd) || seqInWindow(seqAdd(seq, segLen - 1), this.rcvNxt, wnd);
    if (!ok) {
      if (!(f & RST)) {
        this.stats.unacceptable++;
        this.ackNow = true;
        // All of it was received before: report the duplicate (DSACK, RFC 2883 §4.1.1).
        if (this.sackOk && data.length > 0 && seqLe(seqAdd(seq, data.length), this.rcvNxt) && seqLt(seq, this.rcvNxt)) {
          this.dsack = [seq, seqAdd(seq, data.length)];
        }
        if (this.st === TIME_WAIT && fin) this.stateAt = now + this.cfg.timeWait;
      }
      return;
    }

    if (f & RST) {
      // RFC 5961 §3: only an exact match resets; in-window otherwise gets a challenge ACK.
      if (seq === this.rcvNxt) this.finish(this.st === TIME_WAIT ? 'normal' : 'reset');
      else {
        this.stats.challengeAcks++;
        this.ackNow = true;
      }
      return;
    }
    if (f & SYN) {
      // RFC 5961 §4: SYN in a synchronized state gets a challenge ACK.
      this.stats.challengeAcks++;
      this.ackNow = true;
      return;
    }
    if (!(f & ACK)) return;

    // TS.Recent (RFC 7323 §4.3), which never goes back (PAWS let a TSval one tick behind, or a
    // disordered ACK, through).
    if (ts !== undefined && !disordered && seqLe(seq, this.lastAckSent) && !seqLt(ts[0], this.tsRecent)) this.tsRecent = ts[0];

    // Trim to the window.
    const before = seqDiff(this.rcvNxt, seq);
    if (before > 0) {
      // Already received: report it (DSACK, RFC 2883 §4.1.1).
      if (this.sackOk && data.length > 0) this.dsack = [seq, seqAdd(seq, Math.min(before, data.length))];
      if (before >= data.length) {
        if (before > data.length) fin = false;
        data = EMPTY_PAYLOAD;
      } else data = data.subarray(before);
      seq = this.rcvNxt;
      this.ackNow = true; // a duplicate: acknowledge at once (RFC 5681 §4.2)
    }
    const room = seqDiff(this.rcvAdv, seq);
    if (data.length + (fin ? 1 : 0) > room) {
      if (data.length > room) data = data.subarray(0, Math.max(0, room));
      fin = false;
      this.ackNow = true;
    }

    // ACK.
    if (this.st === SYN_RECEIVED) {
      if (seqGt(seg.ack, this.sndUna) && seqLe(seg.ack, this.sndMax)) {
        this.synAcked(seg);
        if (this.closed) return; // the owner may abort in onEstablished
      } else {
        this.emitRaw(seg.ack, 0, RST);
        return;
      }
    } else {
      if (seqGt(seg.ack, this.sndMax)) {
        this.ackNow = true; // acknowledges something not yet sent
        return;
      }
      if (seqLt(seg.ack, seqAdd(this.sndUna, -this.maxSndWnd))) {
        this.stats.challengeAcks++; // RFC 5961 §5.2: too old to be real
        this.ackNow = true;
        return;
      }
      this.processAck(seg, data.length, fin, disordered);
      if (this.st === CLOSED) return;
    }

    // Data and FIN.
    if (data.length > 0 || fin) {
      const st = this.st;
      if (st === ESTABLISHED || st === FIN_WAIT_1 || st === FIN_WAIT_2) this.receive(seq, data, fin);
      else this.ackNow = true; // past the peer's FIN nothing is new
    }
  }

  /**
   * A segment PAWS would drop that is only a reordered ACK (after Linux's tcp_disordered_ack):
   * no data, at RCV.NXT, acknowledging nothing new, not extending the window's right edge
   * (its window update is skipped anyway), and its timestamp within an RTO of TS.Recent.
   * Dropping those would throw away the SACK (and DSACK) blocks of every ACK overtaken by a
   * later one — a large share of them on a reordering path.
   */
  private disorderedAck(seg: Segment, tsval: number): boolean {
    if (seg.flags & (SYN | FIN) || !(seg.flags & ACK) || seg.payload.length > 0) return false;
    if (seg.seq !== this.rcvNxt || seqGt(seg.ack, this.sndUna) || seqGt(seg.seq, this.sndWl1)) return false;
    const edge = seqAdd(seg.ack, seg.window << this.sndScale);
    if (seqGt(edge, seqAdd(this.sndWl2, this.sndWnd))) return false;
    return ((this.tsRecent - tsval) >>> 0) <= this.rto.rto;
  }

  private processAck(seg: Segment, dataLen: number, fin: boolean, disordered: boolean): void {
    const ack = seg.ack;
    const una = this.sndUna;
    const win = seg.window << this.sndScale;
    const sack = this.sackOk ? seg.options.sack : undefined;
    const q = this.txq;
    q.beginAck();
    let dsack = false;
    if (this.sackOk) {
      this.ackTsecr = this.tsOk ? seg.options.ts?.[1] : undefined;
      this.priorFack = this.rackFack;
      this.holeFiller = true;
      if (sack !== undefined && sack.length > 0) dsack = this.takeSack(sack, ack);
    }
    const advanced = seqGt(ack, una);
    if (advanced) {
      this.newAck(ack);
      if (this.st === CLOSED) return;
    } else if (ack === una && dataLen === 0 && !fin && una !== this.sndMax && (win === this.sndWnd || (sack !== undefined && sack.length > 0))) {
      // RFC 5681's duplicate ACK keeps the window; with SACK (RFC 6675) the blocks are what
      // count: a Linux receiver moves its window on almost every ACK.
      this.dupAck();
    }
    this.takeRttSample(seg, advanced);
    // Window update (SND.WL1/WL2 rule); a disordered ACK carries an old window.
    if (!disordered && seqGe(ack, una) && (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq && seqLe(this.sndWl2, ack)))) {
      this.sndWnd = win;
      this.sndWl1 = seg.seq;
      this.sndWl2 = ack;
      if (win > this.maxSndWnd) this.maxSndWnd = win;
      if (win > 0 && this.persistAt !== NONE) {
        this.persistAt = NONE;
        this.persistShift = 0;
      }
    }
    if (this.sackOk && this.st !== TIME_WAIT) this.sackRecovery(advanced, dsack);
  }

  /**
   * Applies the SACK blocks of an ACK to the tx queue; returns whether the first one is a DSACK
   * (RFC 2883: below the cumulative ACK, or inside the second block).
   */
  private takeSack(sack: readonly SackRange[], ack: number): boolean {
    const q = this.txq;
    const una = this.sndUna;
    const sndMax = this.sndMax;
    const [s0, e0] = sack[0]!;
    let dsack = false;
    if (seqLt(s0, e0) && (seqLe(e0, ack) || (sack.length > 1 && seqGe(s0, sack[1]![0]) && seqLe(e0, sack[1]![1])))) {
      dsack = true;
      this.onDsack(s0, e0);
    }
    for (let i = dsack ? 1 : 0; i < sack.length; i++) {
      const [s, e] = sack[i]!;
      // Only blocks within (SND.UNA, SND.MAX]; anything else is stale or bogus.
      if (!seqLt(s, e) || seqLe(e, una) || seqGt(e, sndMax)) continue;
      q.sack(seqMax(s, una), e, this.onDelivered);
    }
    return dsack;
  }

  /** A DSACK for [s, e): a segment arrived twice. */
  private onDsack(s: number, e: number): void {
    this.stats.dsacksIn++;
    // RACK (RFC 8985 §6.2 step 4): widen the reordering window, at most once per round trip.
    if (this.dsackRound === null || seqGe(this.sndUna, this.dsackRound)) {
      this.dsackRound = this.sndMax;
      this.reoWndMult = Math.min(this.reoWndMult + 1, 255);
      this.reoExtent = Math.min(this.reoExtent * 1.25, this.reoCap()); // the measured extent fell short too
      this.reoWndPersist = REO_WND_PERSIST;
    }
    // Undo (RFC 3708): a retransmission of this episode was not needed.
    if (this.undoMarker !== null) this.proveSpurious(s, e);
    // The tail loss probe was not needed: the original arrived too (RFC 8985 §7.4.2).
    if (this.tlpEnd !== null && this.tlpRetrans && e === this.tlpEnd) this.tlpEnd = null;
  }

  /** RACK_update and reordering detection for a record that left the network (bound: a callback). */
  private readonly onDelivered = (r: TxRecord, cum: boolean): void => {
    const rtt = this.now - r.xmitAt;
    const filler = cum && this.holeFiller;
    if (cum) this.holeFiller = false;
    if (seqGt(r.end, this.rackFack)) this.rackFack = r.end;
    if (r.flags & EVER) {
      // Which transmission was delivered? Not this one if the ACK echoes an older timestamp,
      // nor if it came back faster than any path allows (RFC 8985 §6.2 step 2).
      const ecr = this.ackTsecr;
      if (ecr !== undefined && ecr !== 0 && seqLt(ecr, this.tsAt(r.xmitAt))) {
        if (filler) {
          // It filled the hole this ACK reports, so the echo is its TSval: an earlier
          // transmission arrived (Eifel, RFC 3522), late; the retransmission was not needed,
          // and the lateness counts as reordering (else only segments never resent, i.e. not
          // late enough to be deemed lost, would be measured).
          if (this.undoMarker !== null) this.originalArrived(r.start, ecr);
          if (seqLt(r.end, this.priorFack)) this.noteReordering(this.now - r.sentAt);
        }
        return;
      }
      if (rtt < this.minRtt) return;
    } else {
      if (rtt < this.minRtt) this.minRtt = rtt;
      // Delivered below data that was delivered before it, never resent: reordering.
      if (seqLt(r.end, this.priorFack)) this.noteReordering(rtt);
    }
    if (r.xmitSeq > this.rackXmitSeq) {
      this.rackXmitSeq = r.xmitSeq;
      this.rackRtt = rtt;
    }
  };

  /**
   * One RTT sample per ACK, as Linux takes it: from the send time of the oldest newly
   * acknowledged segment that was sent once (and not SACKed before: its ACK waited for a hole),
   * unless the ACK also covers resent data (then the others may have waited at the peer
   * behind the hole too), else of the oldest newly SACKed one; only else from the timestamp
   * echo, and not when the echo predates the last retransmission of the acknowledged data (a
   * duplicate arrived and the peer echoed an old TS.Recent: RFC 7323 §4.3 keeps TS.Recent for
   * it). Karn's rule holds throughout: a segment sent twice gives no sample by its send time.
   */
  private takeRttSample(seg: Segment, advanced: boolean): void {
    const q = this.txq;
    if (q.ackedXmit >= 0 && q.ackedRetransXmit < 0) this.sampleRtt(this.now - q.ackedXmit);
    else if (q.sackedXmit >= 0) this.sampleRtt(this.now - q.sackedXmit);
    else if (advanced && this.tsOk) {
      const ecr = seg.options.ts?.[1];
      if (ecr === undefined || ecr === 0) return;
      if (q.ackedRetransXmit >= 0 && seqLt(ecr, this.tsAt(q.ackedRetransXmit))) return;
      const rtt = (this.tsNow() - ecr) >>> 0;
      if (rtt < 0x7fffffff) this.sampleRtt(rtt);
    }
  }

  /**
   * Reordering was seen: a segment whose delivery took `rtt` arrived after later ones. How late
   * it came, against the RTT of the segment that overtook it, is the window that was needed.
   */
  private noteReordering(rtt: number): void {
    this.reordSeen = true;
    const late = Math.min(rtt - this.rackRtt, this.reoCap());
    if (late > this.reoExtent) this.reoExtent = late;
    this.reoWndPersist = REO_WND_PERSIST;
  }

  private newAck(ack: number): void {
    const now = this.now;
    const acked = seqDiff(ack, this.sndUna);
    const dataEnd = seqAdd(this.sndBufSeq, this.sndBuf.length);
    const upTo = seqLt(ack, dataEnd) ? ack : dataEnd;
    const n = seqDiff(upTo, this.sndBufSeq);
    if (n > 0) {
      this.sndBuf.consume(n);
      this.sndBufSeq = upTo;
      if (this.wantWritable) this.notifyWritable = true;
    }
    this.sndUna = ack;
    if (seqLt(this.sndNxt, ack)) this.sndNxt = ack;
    this.txq.ack(ack, this.sackOk ? this.onDelivered : noop);

    const cc = this.cc;
    if (this.sackOk) {
      this.dupAcks = 0; // the rest is sackRecovery()'s
    } else if (cc.inRecovery) {
      if (seqGe(ack, cc.recover)) {
        cc.onFullAck(seqDiff(this.sndMax, ack));
        this.dupAcks = 0;
      } else {
        // Partial ACK (RFC 6582 §3.2 step 5): resend the next hole unless already resent.
        cc.onPartialAck(acked);
        if (seqGe(ack, this.rtxHigh)) {
          const r = this.txq.empty ? null : this.txq.at(0);
          if (r !== null && !(r.flags & RETRANS)) {
            this.txq.markLost(r);
            const sent = this.retransmitRecord(r);
            this.rtxHigh = seqAdd(ack, sent);
          }
        }
      }
    } else {
      this.dupAcks = 0;
      if (this.cwndLimited) cc.onAck(acked, now, ack, this.sndMax);
    }

    if (this.finQueued && seqGt(ack, this.finSeq())) {
      switch (this.st) {
        case FIN_WAIT_1:
          this.st = FIN_WAIT_2;
          if (this.cfg.finWait2Timeout !== null) this.stateAt = now + this.cfg.finWait2Timeout;
          break;
        case CLOSING:
          this.enterTimeWait();
          return;
        case LAST_ACK:
          this.finish('normal');
          return;
      }
    }

    this.unackedSince = now;
    this.rtxAt = this.sndUna === this.sndMax ? NONE : now + this.rto.rto;
  }

  private dupAck(): void {
    this.dupAcks++;
    this.stats.dupAcksIn++;
    const cc = this.cc;
    if (this.sackOk) {
      // RACK decides (sackRecovery); this is only a fallback for a peer that negotiated SACK
      // and sends no blocks: three plain duplicates mark the first segment lost.
      if (this.dupAcks === 3 && this.txq.sacked === 0 && !this.txq.empty) this.txq.markLost(this.txq.at(0));
      return;
    }
    if (cc.inRecovery) {
      cc.onDupAck(); // NewReno inflation
    } else if (this.dupAcks === 3 && cc.mayRecover(this.sndUna) && !this.txq.empty) {
      // Fast retransmit (RFC 5681 §3.2, RFC 6582 §3.2 step 2).
      cc.enterRecovery(seqDiff(this.sndMax, this.sndUna), this.sndMax, false);
      this.stats.fastRetransmits++;
      const r = this.txq.at(0);
      this.txq.markLost(r);
      const sent = this.retransmitRecord(r);
      this.rtxHigh = seqAdd(this.sndUna, sent);
      this.rtxAt = this.now + this.rto.rto;
    }
  }

  // ---------------------------------------------------------------------------------------
  // SACK loss recovery: RACK-TLP (RFC 8985), RFC 6675 with PRR (RFC 6937), undo.

  /** RACK's reordering window (RFC 8985 §6.2 step 4). */
  private reoWnd(): number {
    if (!this.reordSeen) {
      // No reordering seen: be quick once recovering, or once DupThresh segments are SACKed.
      if (this.cc.inRecovery || this.cc.inLoss) return 0;
      if (this.txq.sacked >= 3 * this.mss) return 0;
    }
    // RFC 8985: min_RTT/4 more per DSACK round, at most SRTT. On a path whose minimum RTT is
    // far below its reordering delay (a fast lane, as netem's reordering makes) that takes
    // hundreds of rounds, and SRTT itself may be below the delay; so the reordering delay
    // actually measured counts too, and the cap is the RTT's spread, SRTT + 4·RTTVAR (the RTO
    // before its floor), which covers the slow lane of a bimodal path.
    const base = this.minRtt === Infinity ? 0 : this.minRtt / 4;
    return Math.min(Math.max(base * this.reoWndMult, this.reoExtent), this.reoCap());
  }

  private reoCap(): number {
    return this.rto.srtt + 4 * this.rto.rttvar;
  }

  /**
   * RACK_detect_loss: every segment sent before the most recently delivered one, and older
   * than its RTT plus the reordering window, is lost; the youngest of the others arms the
   * reordering timer.
   */
  private rackDetectLoss(): void {
    const q = this.txq;
    this.reoAt = NONE;
    if (this.rackXmitSeq === 0 || (q.sacked === 0 && q.retransOut === 0)) return;
    const reoWnd = this.reoWnd();
    const now = this.now;
    const rackSeq = this.rackXmitSeq;
    const horizon = this.rackRtt + reoWnd - now;
    let timeout = 0;
    for (let i = 0, n = q.length; i < n; i++) {
      const r = q.at(i);
      const f = r.flags;
      if (f & SACKED || (f & (LOST | RETRANS)) === LOST) continue;
      if (r.xmitSeq >= rackSeq) continue; // not sent before the segment known delivered
      const remaining = r.xmitAt + horizon;
      if (remaining < 1e-3) {
        q.markLost(r);
        this.stats.rackLost++;
      } else if (remaining > timeout) timeout = remaining;
    }
    if (timeout > 0) this.reoAt = now + timeout;
  }

  /** After the ACK's SACK and cumulative parts were taken: loss detection and the window. */
  private sackRecovery(advanced: boolean, dsack: boolean): void {
    const cc = this.cc;
    const q = this.txq;
    const delivered = q.delivered;
    if (this.undoMarker !== null) this.tryUndo();
    if (this.tlpEnd !== null) this.tlpAck(advanced, dsack, delivered);
    this.rackDetectLoss();
    if (cc.inRecovery && seqGe(this.sndUna, cc.recover)) {
      cc.exitPrrRecovery();
      if (this.reoWndPersist > 0 && --this.reoWndPersist === 0) {
        // No reordering for a while: back to the RFC's starting window.
        this.reoWndMult = 1;
        this.reoExtent = 0;
      }
    } else if (cc.inLoss && seqGe(this.sndUna, cc.recover)) cc.endLoss();
    if (!cc.inRecovery && !cc.inLoss && q.lost > 0) this.enterRecovery();
    // Growth (outside recovery) when SND.UNA moves, by what left the network (as Linux), and
    // only while cwnd is what limits sending (RFC 7661).
    if (cc.inRecovery) cc.prrAck(delivered, this.pipe());
    else if (advanced && delivered > 0 && this.cwndLimited) cc.onAck(delivered, this.now, this.sndUna, this.sndMax);
  }

  private pipe(): number {
    return this.txq.inflight(seqDiff(this.sndMax, this.sndUna));
  }

  /** RACK found a loss: fast recovery (RFC 6675 with PRR). */
  private enterRecovery(): void {
    this.stats.fastRetransmits++;
    this.tlpEnd = null;
    this.tlpAt = NONE;
    const merged = this.startUndo();
    this.cc.enterPrrRecovery(seqDiff(this.sndMax, this.sndUna), this.sndMax, merged, this.pipe());
  }

  /**
   * A reduction begins: start an undo record, or keep the pending one (returns true) when the
   * previous episode's retransmissions are recent enough that their DSACKs may still come:
   * then both are one episode, undone only if every retransmission of both proves spurious,
   * back to the window before the first.
   */
  private startUndo(): boolean {
    const pending = this.undoMarker !== null && this.undoUnproven > 0;
    if (pending && this.now - this.lastRetransAt <= this.rto.srtt + 4 * this.rto.rttvar) return true;
    this.undoMarker = this.sndUna;
    this.undoLog = [];
    this.undoUnproven = 0;
    return false;
  }

  /** A retransmission of [start, start + len) in an undo episode. */
  private logRetransmission(start: number, len: number): void {
    this.lastRetransAt = this.now;
    const log = this.undoLog;
    for (let i = log.length - 1; i >= 0 && i >= log.length - 64; i--) {
      const e = log[i]!;
      if (e.start === start) {
        e.copies++;
        this.judge(e);
        return;
      }
    }
    if (log.length >= UNDO_LOG_MAX) {
      this.undoMarker = null; // too much to keep track of: no undo this time
      return;
    }
    log.push({ start, end: seqAdd(start, len), firstAt: this.now, copies: 1, dsacks: 0, spurious: false });
    this.undoUnproven++;
  }

  /** Re-judges an entry: spurious once the original is known to have arrived. */
  private judge(e: UndoEntry, originalArrived = false): void {
    const was = e.spurious;
    // Every copy DSACKed means every transmission arrived, the original too (RFC 3708).
    e.spurious = was || originalArrived || e.dsacks >= e.copies;
    if (e.spurious && !was) this.undoUnproven--;
  }

  /** A DSACK for [s, e). */
  private proveSpurious(s: number, e: number): void {
    for (const x of this.undoLog) {
      if (seqLt(x.start, e) && seqLt(s, x.end)) {
        x.dsacks++;
        this.judge(x);
      }
    }
  }

  /**
   * The ACK that filled the hole at `start` echoes `ecr`: if that predates the first
   * retransmission of it, the original filled it (Eifel, RFC 3522).
   */
  private originalArrived(start: number, ecr: number): void {
    for (let i = this.undoLog.length - 1; i >= 0; i--) {
      const x = this.undoLog[i]!;
      if (x.start === start) {
        if (seqLt(ecr, this.tsAt(x.firstAt))) this.judge(x, true);
        return;
      }
    }
  }

  /**
   * Was the reduction spurious? It was when each retransmission of the episode proved
   * unneeded: DSACKed (RFC 3708), or the hole it was for filled by the original (Eifel,
   * RFC 3522: the ACK that filled it echoes an older timestamp).
   */
  private tryUndo(): void {
    const cc = this.cc;
    if (this.undoLog.length === 0 || this.undoUnproven > 0) return;
    this.stats.undos++;
    this.undoMarker = null;
    this.reordSeen = true;
    cc.undo();
    this.txq.unmarkLost();
  }

  /** RFC 8985 §7.4: did the tail loss probe repair a loss? */
  private tlpAck(advanced: boolean, dsack: boolean, delivered: number): void {
    const ack = this.sndUna;
    const end = this.tlpEnd!;
    if (seqLt(ack, end)) return;
    if (!this.tlpRetrans) this.tlpEnd = null;
    else if (seqGt(ack, end)) {
      // The probe was needed: something was lost. One reduction, no recovery.
      this.tlpEnd = null;
      this.cc.reduceOnce();
    } else if (!advanced && !dsack && delivered === 0) this.tlpEnd = null; // original and probe both arrived
  }

  /** Reordering timer: the segments it waited for are now overdue. */
  private onReorderTimer(): void {
    this.reoAt = NONE;
    if (!this.canSend() || !this.sackOk) return;
    this.rackDetectLoss();
    const cc = this.cc;
    if (!cc.inRecovery && !cc.inLoss && this.txq.lost > 0) this.enterRecovery();
    if (cc.inRecovery) cc.prrAck(this.mss, this.pipe());
    if (this.trySend(false)) this.armTlp();
  }

  /**
   * Schedules a tail loss probe (RFC 8985 §7.2) after data went out or an ACK came in: only
   * in the open state with data in flight, no probe outstanding and no reordering timer, and
   * only when it would fire before the RTO.
   */
  private armTlp(): void {
    this.tlpAt = NONE;
    const cc = this.cc;
    if (!this.sackOk || this.sndUna === this.sndMax || cc.inRecovery || cc.inLoss) return;
    if (this.tlpEnd !== null || this.reoAt !== NONE || this.rtxAt === NONE || !this.canSend()) return;
    let pto: number;
    if (this.rto.hasSample) {
      pto = 2 * this.rto.srtt;
      pto += seqDiff(this.sndMax, this.sndUna) <= this.mss ? TLP_DELACK : 2;
    } else pto = this.cfg.rtoInitial;
    const at = this.now + pto;
    if (at < this.rtxAt) this.tlpAt = at;
  }

  /** The probe: one new segment if there is one, else the last segment again. */
  private onTlpTimer(): void {
    this.tlpAt = NONE;
    const cc = this.cc;
    if (!this.canSend() || this.sndUna === this.sndMax || cc.inRecovery || cc.inLoss || this.tlpEnd !== null) return;
    this.stats.tlpProbes++;
    const before = this.sndMax;
    this.trySend(false, true);
    if (this.sndMax === before) {
      const q = this.txq;
      let r: TxRecord | null = null;
      for (let i = q.length - 1; i >= 0; i--) {
        const c = q.at(i);
        if (!(c.flags & SACKED)) {
          r = c;
          break;
        }
      }
      if (r === null || this.retransmitRecord(r) === 0) return;
      this.tlpRetrans = true;
    } else this.tlpRetrans = false;
    this.tlpEnd = this.sndMax;
    this.tlpAt = NONE;
    this.rtxAt = this.now + this.rto.rto;
  }

  /** Data (and FIN) inside the window, after the ACK was processed. */
  private receive(seq: number, data: Buffer, fin: boolean): void {
    if (seq !== this.rcvNxt) {
      this.stats.oooSegments++;
      const held = this.ooo.bytes;
      if (!this.ooo.insert(seq, data)) this.stats.oooDrops++;
      else if (this.sackOk && data.length > 0 && this.ooo.bytes === held) this.dsack = [seq, seqAdd(seq, data.length)]; // a duplicate (RFC 2883 §4.1.2)
      if (fin) this.ooo.finAt = seqAdd(seq, data.length);
      this.ackNow = true; // duplicate ACK, with SACK blocks, at once
      return;
    }
    const hadOoo = !this.ooo.empty || this.ooo.finAt !== -1;
    if (data.length > 0) {
      this.rcvNxt = seqAdd(this.rcvNxt, data.length);
      // A TSO super-segment from a vnet-hdr VM is many segments: ACK it at once, as Linux does
      // once more than one full-sized segment has arrived.
      this.pendingAcks += data.length > this.mss ? 2 : 1;
      this.deliver(data);
      if (this.st === CLOSED) return;
    }
    if (hadOoo) {
      this.ackNow = true; // a hole was (partly) filled
      for (let b = this.ooo.shift(this.rcvNxt); b !== null; b = this.ooo.shift(this.rcvNxt)) {
        this.rcvNxt = seqAdd(this.rcvNxt, b.length);
        this.deliver(b);
        if (this.st === CLOSED) return;
      }
      if (this.ooo.finAt === this.rcvNxt) fin = true;
    }
    if (fin) this.receiveFin();
    else if (this.pendingAcks >= 2 || this.cfg.delayedAck <= 0) this.ackNow = true;
  }

  private deliver(b: Buffer): void {
    this.unconsumed += b.length;
    this.stats.bytesIn += b.length;
    this.handler.onData?.(b);
  }

  private receiveFin(): void {
    this.rcvNxt = seqAdd(this.rcvNxt, 1);
    this.ooo.clear();
    this.ackNow = true;
    switch (this.st) {
      case ESTABLISHED:
        this.st = CLOSE_WAIT;
        break;
      case FIN_WAIT_1:
        this.st = CLOSING;
        break;
      case FIN_WAIT_2:
        this.enterTimeWait();
        break;
    }
    this.handler.onEnd?.();
  }

  /** End of input(): acknowledgements, new data, writable notification. */
  private flush(): void {
    if (this.st === CLOSED) return;
    // A pure ACK so that it carries SACK blocks (and a DSACK).
    if (this.ackNow && (!this.ooo.empty || this.dsack !== null)) this.sendAck();
    this.trySend(false);
    if (this.st === CLOSED) return;
    this.armTlp(); // an ACK came: the probe timer restarts
    if (this.ackNow) this.sendAck();
    else if (this.pendingAcks > 0 && this.delackAt === NONE) this.delackAt = this.now + this.cfg.delayedAck;
    if (this.notifyWritable) {
      this.notifyWritable = false;
      this.wantWritable = false;
      if (this.sndBuf.free > 0 && !this.finQueued) this.handler.onWritable?.();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Sending.

  private finSeq(): number {
    return seqAdd(this.sndBufSeq, this.sndBuf.length);
  }

  private canSend(): boolean {
    const st = this.st;
    return st === ESTABLISHED || st === CLOSE_WAIT || st === FIN_WAIT_1 || st === CLOSING || st === LAST_ACK;
  }

  /**
   * Sends what the windows allow: first the segments deemed lost (RFC 6675 NextSeg rule 1),
   * then new data, while the pipe is below cwnd. `force` overrides sender SWS avoidance
   * (persist timer); `probe` lets one more segment out past cwnd (a tail loss probe). Returns
   * whether anything was sent.
   */
  private trySend(force: boolean, probe = false): boolean {
    if (!this.canSend()) return false;
    const now = this.now;
    const q = this.txq;
    const cc = this.cc;
    if (this.sndUna === this.sndMax && now - this.lastSendAt > this.rto.rto) cc.afterIdle();
    let blocked = false;
    let sentAny = false;
    let pipe = this.pipe();
    if (q.lostPending > 0) {
      for (let i = 0; i < q.length && q.lostPending > 0 && pipe < cc.cwnd; i++) {
        const r = q.at(i);
        if ((r.flags & (LOST | RETRANS | SACKED)) !== LOST) continue;
        const sent = this.retransmitRecord(r);
        if (sent === 0) break;
        pipe += sent;
        sentAny = true;
      }
    }
    for (;;) {
      const limit = this.mss;
      const off = seqDiff(this.sndNxt, this.sndBufSeq);
      const unsent = this.sndBuf.length - off;
      const inFlight = seqDiff(this.sndNxt, this.sndUna);
      const wndLeft = this.sndWnd - inFlight;
      if (unsent > 0) {
        // Limited transmit (RFC 3042; without SACK): a new segment for each of the first two
        // duplicate ACKs. With SACK the pipe does this: SACKed data has left it.
        const lt = !this.sackOk && !cc.inRecovery && this.dupAcks > 0 && this.dupAcks < 3 ? this.dupAcks * this.mss : 0;
        const cwndLeft = cc.cwnd + lt + (probe ? this.mss : 0) - pipe;
        const len = Math.min(limit, unsent, wndLeft, cwndLeft);
        if (len <= 0) {
          blocked = wndLeft <= 0;
          this.cwndLimited = !blocked;
          break;
        }
        if (len < limit && len < unsent && !force) {
          // Sender SWS avoidance (RFC 9293 §3.8.6.2.1): wait for ACKs rather than dribble.
          if (inFlight > 0) break;
          if (len < this.maxSndWnd >>> 1) {
            blocked = true;
            break;
          }
        }
        const data = this.sndBuf.view(off, len);
        const last = off + data.length === this.sndBuf.length;
        let flags = ACK;
        if (last) {
          flags |= PSH;
          if (this.finQueued && wndLeft > data.length) flags |= FIN;
        }
        const seq = this.sndNxt;
        const used = data.length + (flags & FIN ? 1 : 0);
        this.stats.bytesOut += data.length;
        this.emitSegment(seq, flags, data, false);
        this.advance(seq, used);
        pipe += used;
        cc.prrSent(used);
        sentAny = true;
        force = false;
        probe = false;
      } else if (this.finQueued && this.sndNxt === this.finSeq()) {
        this.cwndLimited = false;
        if (wndLeft <= 0) {
          blocked = true;
          break;
        }
        const seq = this.sndNxt;
        this.emitSegment(seq, ACK | FIN, EMPTY_PAYLOAD, false);
        this.advance(seq, 1);
        cc.prrSent(1);
        sentAny = true;
      } else {
        this.cwndLimited = false; // nothing more to send
        break;
      }
    }
    if (blocked && this.sndUna === this.sndMax && this.persistAt === NONE) {
      this.persistAt = now + Math.min(this.cfg.rtoMax, this.rto.rto * 2 ** this.persistShift);
    }
    if (sentAny) this.armTlp();
    return sentAny;
  }

  /** New sequence space [seq, seq + used) went out. */
  private advance(seq: number, used: number): void {
    if (this.sndUna === this.sndMax) this.unackedSince = this.now;
    this.txq.push(seq, seqAdd(seq, used), this.now);
    this.sndNxt = seqAdd(seq, used);
    if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
    if (this.rtxAt === NONE) this.rtxAt = this.now + this.rto.rto;
  }

  /**
   * Sends again up to `max` bytes of sequence space from `seq` (at most one MSS of data; a
   * FIN only if it fits in `max`); returns the sequence space covered.
   */
  private retransmit(seq: number, max: number): number {
    const off = seqDiff(seq, this.sndBufSeq);
    const avail = Math.min(this.sndBuf.length - off, seqDiff(this.sndMax, seq));
    const finSent = this.finQueued && seqGt(this.sndMax, this.finSeq());
    let flags = ACK;
    let data = EMPTY_PAYLOAD;
    if (avail > 0) {
      data = this.sndBuf.view(off, Math.min(max, this.mss, avail));
      if (off + data.length === this.sndBuf.length) {
        flags |= PSH;
        if (finSent && data.length < max) flags |= FIN;
      }
    } else if (finSent && seq === this.finSeq()) flags |= FIN;
    else return 0;
    this.stats.retransmits++;
    this.emitSegment(seq, flags, data, false);
    return data.length + (flags & FIN ? 1 : 0);
  }

  /** Resends a record of the tx queue (splitting it if the send buffer gave a shorter view). */
  private retransmitRecord(r: TxRecord): number {
    const len = seqDiff(r.end, r.start);
    const sent = this.retransmit(r.start, len);
    if (sent === 0) return 0;
    const q = this.txq;
    if (sent < len) q.splitAt(seqAdd(r.start, sent));
    q.setFlags(r, r.flags | RETRANS | EVER);
    q.resent(r, this.now);
    this.cc.prrSent(sent);
    if (this.undoMarker !== null) this.logRetransmission(r.start, sent);
    if (this.rtxAt === NONE) this.rtxAt = this.now + this.rto.rto;
    return sent;
  }

  /**
   * A pure ACK carries SND.MAX (equal to SND.NXT here: retransmissions never move SND.NXT
   * back): an ACK below the peer's RCV.NXT would be unacceptable to it and answered by another
   * ACK — two ends doing that would ping-pong forever.
   */
  private sendAck(): void {
    this.emitSegment(this.sndMax, ACK, EMPTY_PAYLOAD, true);
  }

  /** Every non-RST segment after the handshake goes through here. */
  private emitSegment(seq: number, flags: number, payload: Buffer, withSack: boolean): void {
    let options = NO_OPTIONS;
    const sack = withSack && this.sackOk && (!this.ooo.empty || this.dsack !== null);
    if (this.tsOk) {
      const tsv: [number, number] = [this.tsNow(), this.tsRecent];
      options = sack ? { ts: tsv, sack: this.sackBlocks(3) } : { ts: tsv };
    } else if (sack) options = { sack: this.sackBlocks(4) };
    const window = this.advertiseWindow();
    this.lastAckSent = this.rcvNxt;
    this.pendingAcks = 0;
    this.ackNow = false;
    this.delackAt = NONE;
    this.lastSendAt = this.now;
    this.stats.segsOut++;
    this.emitFn({ seq, ack: this.rcvNxt, flags, window, options, payload });
  }

  /** SACK blocks for an ACK: a pending DSACK first (RFC 2883), then the out-of-order data. */
  private sackBlocks(max: number): SackRange[] {
    const d = this.dsack;
    if (d === null) return this.ooo.sackBlocks(max);
    this.dsack = null;
    this.stats.dsacksOut++;
    const blocks = this.ooo.sackBlocks(max - 1);
    blocks.unshift(d);
    return blocks;
  }

  private emitRaw(seq: number, ack: number, flags: number): void {
    this.stats.segsOut++;
    this.emitFn({ seq, ack, flags, window: 0, options: NO_OPTIONS, payload: EMPTY_PAYLOAD });
  }

  /** Receiver SWS threshold (RFC 9293 §3.8.6.2.2). */
  private rcvThreshold(): number {
    return Math.max(1, Math.min(this.cfg.rcvBuf >>> 1, this.mss));
  }

  /** The window field to send; updates RCV.ADV. Never shrinks the window (rounds up). */
  private advertiseWindow(): number {
    const free = Math.max(0, this.cfg.rcvBuf - this.unconsumed);
    const cur = Math.max(0, seqDiff(this.rcvAdv, this.rcvNxt));
    let w = free;
    if (w <= cur || w - cur < this.rcvThreshold()) w = cur;
    const shift = this.rcvScale;
    let field = Math.ceil(w / 2 ** shift);
    if (field > 0xffff) field = 0xffff;
    this.rcvAdv = seqAdd(this.rcvNxt, field * 2 ** shift);
    return field;
  }

  private tsNow(): number {
    return this.tsAt(this.now);
  }

  /** The TSval sent at time `t`. */
  private tsAt(t: number): number {
    return (Math.floor(t) + this.tsOffset) >>> 0;
  }

  private sampleRtt(rtt: number): void {
    this.rto.sample(rtt);
    this.cc.onRtt(rtt, this.rto.srtt);
  }

  // ---------------------------------------------------------------------------------------
  // Timers.

  private onRetransmitTimer(): void {
    const now = this.now;
    this.rtxAt = NONE;
    if (this.st === SYN_SENT || this.st === SYN_RECEIVED) {
      const limit = this.st === SYN_SENT ? this.cfg.synRetries : this.cfg.synAckRetries;
      if (this.synRetransmits >= limit) {
        this.finish('timeout');
        return;
      }
      this.synRetransmits++;
      this.stats.retransmits++;
      this.rto.backoff();
      if (this.st === SYN_SENT) this.sendSyn();
      else this.sendSynAck();
      this.rtxAt = now + this.rto.rto;
      return;
    }
    if (this.sndUna === this.sndMax || !this.canSend()) return;
    if (now - this.unackedSince >= this.cfg.userTimeout) {
      this.finish('timeout');
      return;
    }
    // RFC 6298 §5.4–5.6 and RFC 5681 §3.1: back off, collapse cwnd, resend from SND.UNA.
    this.stats.rtoTimeouts++;
    const flight = seqDiff(this.sndMax, this.sndUna);
    const cc = this.cc;
    if (this.sackOk) {
      // RFC 8985 §6.3 / Linux: everything not SACKed is lost; slow start from one segment.
      const merged = !cc.inRecovery && !cc.inLoss ? this.startUndo() : true;
      cc.onSackTimeout(flight, this.sndMax, merged);
      this.tlpEnd = null;
      this.tlpAt = NONE;
      this.reoAt = NONE;
    } else cc.onTimeout(flight, this.sndMax);
    this.dupAcks = 0;
    // Keep the SACK information across one timeout (the resending skips SACKed data); a second
    // timeout in a row suggests the peer reneged, so forget it then.
    const head = this.txq.empty ? null : this.txq.at(0);
    this.txq.markAllLost(this.rto.backoffs > 0 || (head !== null && (head.flags & SACKED) !== 0));
    this.rto.backoff();
    this.rtxAt = NONE;
    const r = this.txq.empty ? null : this.txq.at(0);
    const sent = r === null ? 0 : this.retransmitRecord(r);
    this.rtxHigh = seqAdd(this.sndUna, sent);
    this.rtxAt = Math.min(now + this.rto.rto, this.unackedSince + this.cfg.userTimeout);
  }

  private onPersistTimer(): void {
    const now = this.now;
    this.persistAt = NONE;
    if (!this.canSend() || this.sndUna !== this.sndMax) return;
    const pending = this.sndBuf.length - seqDiff(this.sndNxt, this.sndBufSeq) > 0 || (this.finQueued && this.sndNxt === this.finSeq());
    if (!pending) {
      this.persistShift = 0;
      return;
    }
    if (this.persistShift > 0 && now - this.lastRecvAt >= this.cfg.userTimeout) {
      this.finish('timeout');
      return;
    }
    this.persistShift++;
    if (this.sndWnd > 0) {
      this.trySend(true); // a small window: send what fits (SWS override)
    } else {
      // Zero-window probe: an old sequence number makes the peer answer with its window.
      this.stats.persistProbes++;
      this.emitSegment(seqAdd(this.sndUna, -1), ACK, EMPTY_PAYLOAD, false);
    }
    if (this.sndUna === this.sndMax && this.persistAt === NONE) {
      this.persistAt = now + Math.min(this.cfg.rtoMax, this.rto.rto * 2 ** this.persistShift);
    }
  }

  private onKeepaliveTimer(): void {
    const now = this.now;
    const ka = this.cfg.keepalive;
    this.keepAt = NONE;
    const st = this.st;
    if (ka === null || !(st === ESTABLISHED || st === CLOSE_WAIT || st === FIN_WAIT_1 || st === FIN_WAIT_2)) return;
    if (this.sndUna !== this.sndMax || this.persistAt !== NONE) {
      this.keepAt = now + ka.idle; // the retransmission / persist timers watch the peer
      return;
    }
    if (this.keepProbes === 0 && this.lastRecvAt + ka.idle > now) {
      this.keepAt = this.lastRecvAt + ka.idle;
      return;
    }
    if (this.keepProbes >= ka.count) {
      this.emitRaw(this.sndNxt, this.rcvNxt, RST | ACK);
      this.finish('timeout');
      return;
    }
    this.keepProbes++;
    this.stats.keepaliveProbes++;
    this.emitSegment(seqAdd(this.sndUna, -1), ACK, EMPTY_PAYLOAD, false);
    this.keepAt = now + ka.interval;
  }

  private onStateTimer(): void {
    const now = this.now;
    this.stateAt = NONE;
    if (this.st === TIME_WAIT) this.finish('normal');
    else if (this.st === FIN_WAIT_2 && this.cfg.finWait2Timeout !== null) {
      const due = this.lastRecvAt + this.cfg.finWait2Timeout;
      if (due > now) this.stateAt = due;
      else {
        this.emitRaw(this.sndNxt, this.rcvNxt, RST | ACK);
        this.finish('timeout');
      }
    }
  }

  private enterTimeWait(): void {
    this.st = TIME_WAIT;
    this.rtxAt = NONE;
    this.reoAt = NONE;
    this.tlpAt = NONE;
    this.persistAt = NONE;
    this.keepAt = NONE;
    this.stateAt = this.now + this.cfg.timeWait;
    this.sndBuf.release();
  }

  private finish(reason: CloseReason): void {
    if (this.st === CLOSED) return;
    this.st = CLOSED;
    this.rtxAt = NONE;
    this.reoAt = NONE;
    this.tlpAt = NONE;
    this.persistAt = NONE;
    this.keepAt = NONE;
    this.delackAt = NONE;
    this.stateAt = NONE;
    this.sndBuf.release();
    this.ooo.clear();
    this.handler.onClose?.(reason);
  }
}
