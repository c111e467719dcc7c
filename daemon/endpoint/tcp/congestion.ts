/**
 * Congestion control. `CongestionControl` holds what every algorithm shares: fast retransmit /
 * fast recovery as modified by RFC 6582 (no SACK), and with SACK the window side of RFC 6675
 * recovery — Proportional Rate Reduction (RFC 6937, PRR-SSRB), the "loss" state after a
 * retransmission timeout (slow start until SND.MAX at the timeout is acknowledged) and undo of
 * a reduction that proves spurious (DSACK, RFC 3708; timestamps, RFC 3522). The connection
 * decides when an ACK is new, duplicate, partial or full, and does the retransmitting.
 *
 * The algorithms differ in how the window grows (`onAck`) and by how much a congestion event
 * cuts it (`reduce`): `NewReno` (RFC 5681 slow start and congestion avoidance, halving) and
 * `Cubic` (RFC 9438, β = 0.7, with HyStart++, RFC 9406, in the initial slow start). Both start
 * from the initial window of RFC 6928. Time is the connection's clock, in ms.
 */
import { seqGe, seqLt } from './seq.js';

export type CongestionAlgorithm = 'cubic' | 'newreno';
export const CONGESTION_ALGORITHMS: readonly CongestionAlgorithm[] = ['cubic', 'newreno'];

/** RFC 6928: min(10·MSS, max(2·MSS, 14600)). */
export function initialWindow(mss: number): number {
  return Math.min(10 * mss, Math.max(2 * mss, 14600));
}

/** ssthresh before the first congestion event ("arbitrarily high", RFC 5681 §3.1). */
export const INITIAL_SSTHRESH = 0x3fffffff;

export abstract class CongestionControl {
  abstract readonly name: CongestionAlgorithm;
  cwnd: number;
  ssthresh = INITIAL_SSTHRESH;
  inRecovery = false;
  /** The current recovery is SACK-based. */
  sack = false;
  /** SND.MAX when recovery (or the last RTO) began; see RFC 6582 §3.2 step 2. */
  recover: number;
  /** After a retransmission timeout (SACK mode), until `recover` is acknowledged. */
  inLoss = false;
  /** cwnd and ssthresh before the current reduction, for undo; 0 when there is none. */
  priorCwnd = 0;
  priorSsthresh = 0;
  protected acc = 0;
  // PRR (RFC 6937).
  private prrDelivered = 0;
  private prrOut = 0;
  private recoverFs = 1;

  constructor(
    protected mss: number,
    iss: number,
  ) {
    this.cwnd = initialWindow(mss);
    this.recover = iss;
  }

  /** Fixes the MSS once the handshake is done (resets the initial window if nothing was sent). */
  setMss(mss: number): void {
    if (this.cwnd === initialWindow(this.mss)) this.cwnd = initialWindow(mss);
    this.mss = mss;
  }

  /**
   * `acked` bytes of new data left the network outside recovery, while cwnd limited sending,
   * at `now`; `ack` is the new SND.UNA and `sndMax` SND.MAX (round-trip boundaries).
   */
  abstract onAck(acked: number, now?: number, ack?: number, sndMax?: number): void;

  /**
   * A congestion event: the new ssthresh from `basis` (FlightSize or cwnd, as the caller
   * decides), at least 2·SMSS. Called once per event, before cwnd changes.
   */
  protected abstract reduce(basis: number): number;

  /** An RTT sample (ms) and the smoothed RTT after it. */
  onRtt(_rtt: number, _srtt: number): void {}

  /** Algorithm state that undo restores besides cwnd and ssthresh. */
  protected saveState(): void {}
  protected restoreState(): void {}

  /** May three duplicate ACKs at `ack` start fast retransmit? (RFC 6582 §3.2 step 2.) */
  mayRecover(ack: number): boolean {
    return seqGe(ack, this.recover);
  }

  /**
   * Third duplicate ACK: halve. NewReno inflates by the three segments that have left; with
   * SACK the sender counts what is in the network instead (RFC 6675 "pipe"), so cwnd is just
   * ssthresh and is neither inflated nor deflated during recovery.
   */
  enterRecovery(flight: number, sndMax: number, sack: boolean): void {
    this.sack = sack;
    this.ssthresh = this.reduce(flight);
    this.cwnd = this.ssthresh + (sack ? 0 : 3 * this.mss);
    this.recover = sndMax;
    this.inRecovery = true;
    this.acc = 0;
  }

  /** A further duplicate ACK in recovery. */
  onDupAck(): void {
    if (!this.sack) this.cwnd += this.mss;
  }

  /** An ACK below `recover` in recovery: deflate by what it acknowledged (RFC 6582 §3.2 step 5). */
  onPartialAck(acked: number): void {
    if (this.sack) return;
    this.cwnd = Math.max(this.mss, this.cwnd - acked + (acked >= this.mss ? this.mss : 0));
  }

  /** An ACK at or past `recover`: leave recovery (RFC 6582 §3.2 step 4, option 1). */
  onFullAck(flight: number): void {
    this.cwnd = Math.min(this.ssthresh, Math.max(flight, this.mss) + this.mss);
    this.inRecovery = false;
  }

  /** Retransmission timeout (RFC 5681 §3.1 eq. 4, loss window of one segment). */
  onTimeout(flight: number, sndMax: number): void {
    this.ssthresh = this.reduce(flight);
    this.cwnd = this.mss;
    this.inRecovery = false;
    this.recover = sndMax;
    this.acc = 0;
  }

  // ---------------------------------------------------------------------------------------
  // SACK mode: RFC 6675 recovery with PRR, loss state after a timeout, undo.

  /** The reduced window from FlightSize, taken at most cwnd + DupThresh segments (see enterPrrRecovery). */
  private halved(flight: number): number {
    return this.reduce(Math.min(flight, this.cwnd + 3 * this.mss));
  }

  /** Remembers the window before a reduction so that undo() can restore it. */
  private saveForUndo(): void {
    this.priorCwnd = this.cwnd;
    this.priorSsthresh = this.ssthresh;
    this.saveState();
  }

  /**
   * Loss detected (RACK): ssthresh = FlightSize / 2 (RFC 6675 §5 step 4.2, RFC 5681 eq. 4) and
   * PRR starts. `flight` is SND.MAX − SND.UNA, `pipe` what the network holds (RFC 6675).
   * FlightSize counts SACKed data too, which is fair when DupThresh detects the loss (cwnd
   * plus three segments); RACK may detect it a reordering window later, when much more has
   * been SACKed, and FlightSize / 2 could then exceed cwnd — no reduction at all. So the
   * FlightSize taken is at most cwnd + DupThresh·SMSS. RecoverFS is the pipe (RFC 6937bis).
   * `keepUndo`: the window to restore on undo stays the one saved by an earlier reduction.
   */
  enterPrrRecovery(flight: number, sndMax: number, keepUndo = false, pipe = flight): void {
    if (!keepUndo || this.priorCwnd === 0) this.saveForUndo();
    this.ssthresh = this.halved(flight);
    this.recoverFs = Math.max(pipe, this.mss);
    this.prrDelivered = 0;
    this.prrOut = 0;
    this.recover = sndMax;
    this.sack = true;
    this.inRecovery = true;
    this.inLoss = false;
    this.acc = 0;
  }

  /**
   * An ACK in PRR recovery that newly delivered `delivered` bytes, with `pipe` (RFC 6675)
   * after loss marking: sets cwnd to pipe + what may be sent now (RFC 6937 §3, PRR-SSRB).
   */
  prrAck(delivered: number, pipe: number): void {
    this.prrDelivered += delivered;
    let sndcnt: number;
    if (pipe > this.ssthresh) {
      sndcnt = Math.ceil((this.prrDelivered * this.ssthresh) / this.recoverFs) - this.prrOut;
    } else {
      const limit = Math.max(this.prrDelivered - this.prrOut, delivered) + this.mss;
      sndcnt = Math.min(this.ssthresh - pipe, limit);
    }
    // The first retransmission goes out whatever the arithmetic says (RFC 6937bis).
    if (this.prrOut === 0 && sndcnt < this.mss) sndcnt = this.mss;
    this.cwnd = pipe + Math.max(0, sndcnt);
  }

  /** Bytes (re)sent during PRR recovery. */
  prrSent(n: number): void {
    if (this.inRecovery) this.prrOut += n;
  }

  /** SND.UNA reached `recover`: PRR ends with cwnd = ssthresh (RFC 6937 §3). */
  exitPrrRecovery(): void {
    this.cwnd = Math.max(this.ssthresh, this.mss);
    this.inRecovery = false;
    this.acc = 0;
  }

  /**
   * Retransmission timeout in SACK mode: cwnd to one segment, slow start until `recover`. The
   * window is halved only when no reduction is under way (a timeout during recovery or after
   * another timeout already had its reduction), as Linux does.
   */
  onSackTimeout(flight: number, sndMax: number, keepUndo = false): void {
    if (!this.inRecovery && !this.inLoss) {
      if (!keepUndo || this.priorCwnd === 0) this.saveForUndo();
      this.ssthresh = this.halved(flight);
    }
    this.cwnd = this.mss;
    this.inRecovery = false;
    this.inLoss = true;
    this.recover = sndMax;
    this.acc = 0;
  }

  /** The loss state ends when SND.MAX at the timeout is acknowledged. */
  endLoss(): void {
    this.inLoss = false;
  }

  /** A tail loss probe repaired a loss (RFC 8985 §7.4.2): one reduction, no recovery. */
  reduceOnce(): void {
    this.ssthresh = this.reduce(this.cwnd);
    this.cwnd = this.ssthresh;
    this.acc = 0;
  }

  /** The last reduction was spurious: restore the window from before it (RFC 4015 §3 / Linux). */
  undo(): void {
    if (this.priorCwnd > 0) {
      this.cwnd = Math.max(this.cwnd, this.priorCwnd);
      this.ssthresh = Math.max(this.ssthresh, this.priorSsthresh);
      this.restoreState();
    }
    this.priorCwnd = 0;
    this.priorSsthresh = 0;
    this.inRecovery = false;
    this.inLoss = false;
    this.acc = 0;
  }

  /** Idle for longer than an RTO (RFC 5681 §4.1): restart from the initial window. */
  afterIdle(): void {
    this.cwnd = Math.min(this.cwnd, initialWindow(this.mss));
  }
}

/** RFC 5681: slow start (byte counting, L = 2·SMSS, RFC 3465), one SMSS per RTT after it, halving. */
export class NewReno extends CongestionControl {
  readonly name = 'newreno';

  onAck(acked: number): void {
    if (this.cwnd < this.ssthresh) {
      this.cwnd += Math.min(acked, 2 * this.mss);
    } else {
      // Congestion avoidance: one SMSS per cwnd of acknowledged data.
      this.acc += acked;
      if (this.acc >= this.cwnd) {
        this.acc -= this.cwnd;
        this.cwnd += this.mss;
      }
    }
  }

  protected reduce(basis: number): number {
    return Math.max(basis >>> 1, 2 * this.mss);
  }
}

// RFC 9438 constants (windows in segments, time in seconds).
export const CUBIC_C = 0.4;
export const CUBIC_BETA = 0.7;
/** The Reno-friendly additive increase that gives Reno's average window with β = 0.7 (§4.3). */
export const CUBIC_ALPHA = (3 * (1 - CUBIC_BETA)) / (1 + CUBIC_BETA);

// RFC 9406 constants (ms).
export const HYSTART_MIN_RTT_THRESH = 4;
export const HYSTART_MAX_RTT_THRESH = 16;
export const HYSTART_MIN_RTT_DIVISOR = 8;
export const HYSTART_N_RTT_SAMPLE = 8;
export const HYSTART_CSS_GROWTH_DIVISOR = 4;
export const HYSTART_CSS_ROUNDS = 5;
/** Byte-counting limit in slow start for a sender that does not pace (RFC 9406 §4.3: L = 8). */
export const HYSTART_L = 8;

/** HyStart++ phase of the initial slow start. */
export type HystartPhase = 'ss' | 'css' | 'done';

/**
 * CUBIC (RFC 9438): after a congestion event the window follows W(t) = C·(t − K)³ + W_max
 * (concave up to the old maximum, convex beyond it), never slower than the Reno-friendly
 * estimate W_est; reductions are by β = 0.7, with fast convergence. The initial slow start uses
 * HyStart++ (RFC 9406): a rise of the per-round minimum RTT ends it early, into Conservative
 * Slow Start (a quarter of the growth) for CSS_ROUNDS rounds, then congestion avoidance —
 * unless the RTT falls back (a false exit: slow start resumes).
 */
export class Cubic extends CongestionControl {
  readonly name = 'cubic';
  /** W_max in bytes: the window at the last congestion event (after fast convergence); 0: none yet. */
  wMax = 0;
  /** cwnd just before the last reduction (α_cubic becomes 1 once W_est reaches it). */
  cwndPrior = 0;
  /** Start of the current congestion-avoidance epoch (ms), or -1 until the next CA ACK. */
  epochStart = -1;
  /** K (s): when W(t) reaches `origin`. */
  k = 0;
  /** The plateau W(t) returns to, bytes (W_max, or cwnd at the epoch start when above it). */
  origin = 0;
  /** Reno-friendly window estimate, bytes (fractional). */
  wEst = 0;
  /** Fractional bytes of CUBIC growth not yet added to cwnd. */
  private frac = 0;
  private srtt = 0;

  // HyStart++.
  hystart: HystartPhase = 'ss';
  private windowEnd: number | null = null;
  private lastRoundMinRtt = Infinity;
  private currentRoundMinRtt = Infinity;
  private rttSampleCount = 0;
  private cssBaselineMinRtt = Infinity;
  private cssRounds = 0;

  private saved: [number, number, number, number, number, number] | null = null;

  override onRtt(rtt: number, srtt: number): void {
    this.srtt = srtt;
    if (this.hystart === 'done') return;
    if (this.ssthresh !== INITIAL_SSTHRESH) {
      this.hystart = 'done'; // only the initial slow start (RFC 9406 §4.3)
      return;
    }
    if (rtt < this.currentRoundMinRtt) this.currentRoundMinRtt = rtt;
    this.rttSampleCount++;
    if (this.rttSampleCount < HYSTART_N_RTT_SAMPLE || this.currentRoundMinRtt === Infinity || this.lastRoundMinRtt === Infinity) return;
    if (this.hystart === 'ss') {
      const thresh = Math.max(HYSTART_MIN_RTT_THRESH, Math.min(this.lastRoundMinRtt / HYSTART_MIN_RTT_DIVISOR, HYSTART_MAX_RTT_THRESH));
      if (this.currentRoundMinRtt >= this.lastRoundMinRtt + thresh) {
        this.cssBaselineMinRtt = this.currentRoundMinRtt;
        this.hystart = 'css';
        this.cssRounds = 0;
      }
    } else if (this.currentRoundMinRtt < this.cssBaselineMinRtt) {
      // The RTT rise was a false alarm: back to slow start.
      this.cssBaselineMinRtt = Infinity;
      this.hystart = 'ss';
    }
  }

  /** HyStart++ rounds: one ends when SND.UNA passes the SND.MAX at its start. */
  private round(ack: number, sndMax: number): void {
    if (this.windowEnd !== null && seqLt(ack, this.windowEnd)) return;
    this.windowEnd = sndMax;
    this.lastRoundMinRtt = this.currentRoundMinRtt;
    this.currentRoundMinRtt = Infinity;
    this.rttSampleCount = 0;
    if (this.hystart === 'css' && ++this.cssRounds >= HYSTART_CSS_ROUNDS) {
      // CSS is over: congestion avoidance from here, W_max undefined (RFC 9438 §4.10).
      this.hystart = 'done';
      this.ssthresh = this.cwnd;
      this.epochStart = -1;
    }
  }

  onAck(acked: number, now = 0, ack = 0, sndMax = 0): void {
    const mss = this.mss;
    if (this.hystart !== 'done' && this.ssthresh === INITIAL_SSTHRESH) this.round(ack, sndMax);
    if (this.cwnd < this.ssthresh) {
      if (this.ssthresh === INITIAL_SSTHRESH && this.hystart !== 'done') {
        const inc = Math.min(acked, HYSTART_L * mss);
        if (this.hystart === 'css') {
          this.frac += inc / HYSTART_CSS_GROWTH_DIVISOR;
          this.addFrac();
        } else this.cwnd += inc;
      } else this.cwnd += Math.min(acked, 2 * mss); // slow start after a timeout (RFC 3465, L = 2)
      return;
    }
    this.avoid(acked, now);
  }

  private addFrac(): void {
    const whole = Math.floor(this.frac);
    this.cwnd += whole;
    this.frac -= whole;
  }

  /** W(t) in bytes, t in seconds since the epoch start. */
  wCubic(t: number): number {
    const d = t - this.k;
    return this.origin + CUBIC_C * d * d * d * this.mss;
  }

  /** Congestion avoidance (RFC 9438 §4.2–4.4). */
  private avoid(acked: number, now: number): void {
    const mss = this.mss;
    if (this.epochStart < 0) {
      this.epochStart = now;
      this.frac = 0;
      this.wEst = this.cwnd;
      if (this.cwnd < this.wMax) {
        this.k = Math.cbrt((this.wMax - this.cwnd) / mss / CUBIC_C);
        this.origin = this.wMax;
      } else {
        this.k = 0;
        this.origin = this.cwnd;
      }
    }
    const cwnd = this.cwnd;
    const t = (now - this.epochStart) / 1000;
    // The target one RTT ahead, at most 1.5·cwnd (§4.2).
    let target = this.wCubic(t + this.srtt / 1000);
    if (target < cwnd) target = cwnd;
    else if (target > 1.5 * cwnd) target = 1.5 * cwnd;
    // Reno-friendly region (§4.3): α_cubic until W_est reaches the window before the last cut.
    const alpha = this.wEst >= this.cwndPrior ? 1 : CUBIC_ALPHA;
    this.wEst += (alpha * acked * mss) / cwnd;
    if (this.wCubic(t) < this.wEst) {
      if (this.wEst > cwnd) {
        this.cwnd = Math.floor(this.wEst);
        this.frac = 0;
      }
    } else {
      this.frac += ((target - cwnd) * acked) / cwnd;
      this.addFrac();
    }
  }

  protected reduce(basis: number): number {
    const cwnd = this.cwnd;
    // Fast convergence (§4.7): below the last maximum, another flow wants room: release more.
    this.wMax = cwnd < this.wMax ? (cwnd * (1 + CUBIC_BETA)) / 2 : cwnd;
    this.cwndPrior = cwnd;
    this.epochStart = -1;
    this.hystart = 'done';
    return Math.max(Math.floor(basis * CUBIC_BETA), 2 * this.mss);
  }

  protected override saveState(): void {
    this.saved = [this.wMax, this.cwndPrior, this.epochStart, this.k, this.origin, this.wEst];
  }

  /** Spurious reduction (§4.9): the CUBIC state from before it. */
  protected override restoreState(): void {
    if (this.saved === null) return;
    [this.wMax, this.cwndPrior, this.epochStart, this.k, this.origin, this.wEst] = this.saved;
    this.saved = null;
  }

  override afterIdle(): void {
    super.afterIdle();
    this.epochStart = -1; // the cubic curve does not run on while nothing is sent
  }
}

/** A controller by name. */
export function newCongestionControl(alg: CongestionAlgorithm, mss: number, iss: number): CongestionControl {
  return alg === 'newreno' ? new NewReno(mss, iss) : new Cubic(mss, iss);
}
