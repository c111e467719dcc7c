/**
 * NewReno congestion control: slow start and congestion avoidance (RFC 5681) with the
 * initial window of RFC 6928, fast retransmit / fast recovery as modified by RFC 6582. This
 * class holds the arithmetic; the connection decides when an ACK is new, duplicate, partial or
 * full, and does the retransmitting.
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
  private acc = 0;

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

  /** Idle for longer than an RTO (RFC 5681 §4.1): restart from the initial window. */
  afterIdle(): void {
    this.cwnd = Math.min(this.cwnd, initialWindow(this.mss));
  }
}
