/**
 * NewReno congestion control: slow start and congestion avoidance (RFC 5681) with the
 * initial window of RFC 6928, fast retransmit / fast recovery as modified by RFC 6582. This
 * class holds the arithmetic; the connection decides when an ACK is new, duplicate, partial or
 * full, and does the retransmitting.
 *
 * With SACK the connection detects loss with RACK (RFC 8985) and recovers per RFC 6675; the
 * window is then reduced smoothly by Proportional Rate Reduction (RFC 6937, PRR-SSRB), after a
 * retransmission timeout it is in the "loss" state (slow start until SND.MAX at the timeout is
 * acknowledged), and a reduction that proves spurious (DSACK, RFC 3708; timestamps, RFC 3522)
 * is undone.
 */
import { seqGe } from './seq.js';

/** RFC 6928: min(10·MSS, max(2·MSS, 14600)). */
export function initialWindow(mss: number): number {
  return Math.min(10 * mss, Math.max(2 * mss, 14600));
}

export class NewReno {
  cwnd: number;
  ssthresh = 0x3fffffff;
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
  private acc = 0;
  // PRR (RFC 6937).
  private prrDelivered = 0;
  private prrOut = 0;
  private recoverFs = 1;

  constructor(
    private mss: number,
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

  /** New data acknowledged outside recovery. */
  onAck(acked: number): void {
    if (this.cwnd < this.ssthresh) {
      // Slow start with appropriate byte counting, L = 2·SMSS (RFC 3465).
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
    this.ssthresh = Math.max(flight >>> 1, 2 * this.mss);
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
    this.ssthresh = Math.max(flight >>> 1, 2 * this.mss);
    this.cwnd = this.mss;
    this.inRecovery = false;
    this.recover = sndMax;
    this.acc = 0;
  }

  // ---------------------------------------------------------------------------------------
  // SACK mode: RFC 6675 recovery with PRR, loss state after a timeout, undo.

  /** FlightSize / 2, FlightSize at most cwnd + DupThresh segments (see enterPrrRecovery). */
  private halved(flight: number): number {
    return Math.max(Math.min(flight, this.cwnd + 3 * this.mss) >>> 1, 2 * this.mss);
  }

  /** Remembers the window before a reduction so that undo() can restore it. */
  private saveForUndo(): void {
    this.priorCwnd = this.cwnd;
    this.priorSsthresh = this.ssthresh;
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
    this.ssthresh = Math.max(this.cwnd >>> 1, 2 * this.mss);
    this.cwnd = this.ssthresh;
    this.acc = 0;
  }

  /** The last reduction was spurious: restore the window from before it (RFC 4015 §3 / Linux). */
  undo(): void {
    if (this.priorCwnd > 0) {
      this.cwnd = Math.max(this.cwnd, this.priorCwnd);
      this.ssthresh = Math.max(this.ssthresh, this.priorSsthresh);
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
