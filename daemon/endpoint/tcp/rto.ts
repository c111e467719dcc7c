/**
 * Retransmission timeout estimator (RFC 6298). Times in milliseconds, clock granularity 1 ms.
 * Backoff (§5.5) doubles the timeout up to `max` and is kept until a new RTT sample arrives
 * (Karn's algorithm is the caller's part: it must not sample retransmitted segments).
 */

export interface RtoConfig {
  /** Before the first sample (RFC 6298: 1 s). */
  readonly initial: number;
  /** Floor (RFC 6298 says 1 s; Linux uses 200 ms, which suits a local VM link). */
  readonly min: number;
  /** Ceiling, at least 60 s per RFC 6298 §2.5. */
  readonly max: number;
}

const ALPHA = 1 / 8;
const BETA = 1 / 4;
const K = 4;
const G = 1;

export class RtoEstimator {
  /** Smoothed RTT; 0 until the first sample. */
  srtt = 0;
  rttvar = 0;
  private sampled = false;
  private base: number;
  private shift = 0;

  constructor(private readonly cfg: RtoConfig) {
    this.base = cfg.initial;
  }

  /** The current timeout including backoff. */
  get rto(): number {
    return Math.min(this.cfg.max, Math.ceil(this.base * 2 ** this.shift));
  }

  /** How many times the timer has been backed off since the last sample. */
  get backoffs(): number {
    return this.shift;
  }

  get hasSample(): boolean {
    return this.sampled;
  }

  sample(rtt: number): void {
    if (!(rtt >= 0)) return;
    if (!this.sampled) {
      this.srtt = rtt;
      this.rttvar = rtt / 2;
      this.sampled = true;
    } else {
      this.rttvar = (1 - BETA) * this.rttvar + BETA * Math.abs(this.srtt - rtt);
      this.srtt = (1 - ALPHA) * this.srtt + ALPHA * rtt;
    }
    this.base = Math.min(this.cfg.max, Math.max(this.cfg.min, this.srtt + Math.max(G, K * this.rttvar)));
    this.shift = 0;
  }

  /** Timer expired: double the timeout (§5.5). */
  backoff(): void {
    if (this.base * 2 ** this.shift < this.cfg.max) this.shift++;
  }

  /**
   * After the SYN (or SYN-ACK) had to be retransmitted and no sample was taken, data transfer
   * starts with an RTO of 3 s (RFC 6298 §5.7, scaled to the configured initial value).
   */
  afterSynTimeout(): void {
    if (this.sampled) return;
    this.base = Math.min(this.cfg.max, Math.max(this.base, 3 * this.cfg.initial));
    this.shift = 0;
  }
}
