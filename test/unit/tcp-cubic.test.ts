/**
 * CUBIC (RFC 9438) and HyStart++ (RFC 9406) on a fake clock: the controller is fed ACKs and
 * RTT samples as a sender that always has data (SND.MAX = SND.UNA + cwnd) would see them.
 */
import { describe, expect, it } from 'vitest';
import {
  CUBIC_ALPHA,
  CUBIC_BETA,
  CUBIC_C,
  Cubic,
  HYSTART_CSS_ROUNDS,
  INITIAL_SSTHRESH,
  NewReno,
  initialWindow,
} from '../../daemon/endpoint/tcp/congestion.js';
import { TcpConnection, type Segment } from '../../daemon/endpoint/tcp/index.js';
import { setDefaultCongestion } from '../../daemon/endpoint/tcp/options.js';
import { makeSyn } from './tcp-link.js';

const MSS = 1000;

/** A sender driving `cc`: time in ms, `una` the cumulative ACK. */
class Driver {
  now = 1000;
  una = 0;
  constructor(readonly cc: Cubic | NewReno) {}
  /** One MSS acknowledged, `rtt` after it was sent; the clock moves by rtt·MSS/cwnd (a full window per RTT). */
  ack(rtt: number): void {
    this.now += (rtt * MSS) / this.cc.cwnd;
    this.una += MSS;
    this.cc.onRtt(rtt, rtt);
    this.cc.onAck(MSS, this.now, this.una, this.una + this.cc.cwnd);
  }
  /** Runs ACKs for `ms` of clock at a fixed RTT. */
  run(ms: number, rtt: number): void {
    const end = this.now + ms;
    while (this.now < end) this.ack(rtt);
  }
  /** One round: a window's worth of ACKs. */
  round(rtt: number): void {
    const n = Math.max(1, Math.round(this.cc.cwnd / MSS));
    for (let i = 0; i < n; i++) this.ack(rtt);
  }
  /** A loss detected and repaired (PRR recovery entered and left) with a full window in flight. */
  loss(): void {
    this.cc.enterPrrRecovery(this.cc.cwnd, this.una + this.cc.cwnd);
    this.cc.exitPrrRecovery();
  }
}

/** A CUBIC sender in congestion avoidance at `segs` segments. */
function inAvoidance(segs: number): Driver {
  const cc = new Cubic(MSS, 0);
  cc.hystart = 'done';
  cc.cwnd = segs * MSS;
  cc.ssthresh = segs * MSS;
  return new Driver(cc);
}

describe('CUBIC (RFC 9438)', () => {
  it('a congestion event cuts cwnd to β = 0.7 and remembers W_max', () => {
    const d = inAvoidance(100);
    d.loss();
    expect(d.cc.ssthresh).toBe(70 * MSS);
    expect(d.cc.cwnd).toBe(70 * MSS);
    expect((d.cc as Cubic).wMax).toBe(100 * MSS);
    // NewReno halves the same window.
    const r = new NewReno(MSS, 0);
    r.cwnd = 100 * MSS;
    r.ssthresh = 100 * MSS;
    r.enterPrrRecovery(r.cwnd, 1e6);
    expect(r.ssthresh).toBe(50 * MSS);
  });

  it('after a loss cwnd follows W(t) = C(t − K)³ + W_max: concave up to W_max at K, convex beyond', () => {
    const d = inAvoidance(100);
    const cc = d.cc as Cubic;
    d.loss();
    const rtt = 200; // long enough that the Reno-friendly estimate stays below the curve
    const K = Math.cbrt((100 * (1 - CUBIC_BETA)) / CUBIC_C); // ≈ 4.22 s
    const t0 = d.now;
    const w = (t: number): number => (CUBIC_C * (t - K) ** 3 + 100) * MSS;
    const seen: [number, number][] = [];
    for (const t of [1, 2, 3, K, 5, 6, 7]) {
      d.run(t0 + t * 1000 - d.now, rtt);
      seen.push([t, cc.cwnd]);
      // cwnd aims one RTT ahead and moves towards it over that RTT: within a few % of W(t).
      expect(cc.cwnd / w((d.now - t0) / 1000), `t=${t}`).toBeGreaterThan(0.98);
      expect(cc.cwnd / w((d.now - t0) / 1000 + rtt / 1000), `t=${t}`).toBeLessThan(1.01);
    }
    expect(cc.k).toBeCloseTo(K, 2);
    // The plateau: growth slows down towards W_max and speeds up past it.
    const at = (t: number): number => seen.find((x) => x[0] === t)![1];
    expect(at(2) - at(1)).toBeLessThan(at(1) - 70 * MSS);
    expect(at(K) - at(3)).toBeLessThan(at(3) - at(2));
    expect(at(7) - at(6)).toBeGreaterThan(at(6) - at(5));
    expect(Math.abs(at(K) - 100 * MSS)).toBeLessThan(2 * MSS);
  });

  it('fast convergence: a loss below the last W_max releases more (W_max = cwnd·(1 + β)/2)', () => {
    const d = inAvoidance(100);
    const cc = d.cc as Cubic;
    d.loss(); // W_max 100, cwnd 70
    d.run(1000, 100); // still below 100
    const w = cc.cwnd;
    expect(w).toBeLessThan(100 * MSS);
    d.loss();
    expect(cc.wMax).toBeCloseTo((w * (1 + CUBIC_BETA)) / 2, 6);
    expect(cc.cwnd).toBe(Math.floor(w * CUBIC_BETA));
  });

  it('Reno-friendly region: on a short RTT cwnd grows like W_est, α = 3(1 − β)/(1 + β) segments per RTT', () => {
    const d = inAvoidance(100);
    const cc = d.cc as Cubic;
    d.loss();
    const rtt = 2; // the cubic curve barely moves in 100 RTTs at 2 ms
    const before = cc.cwnd;
    const t0 = d.now;
    for (let i = 0; i < 40; i++) d.round(rtt);
    const grown = (cc.cwnd - before) / MSS;
    expect(grown).toBeGreaterThan(40 * CUBIC_ALPHA * 0.9);
    expect(grown).toBeLessThan(40 * CUBIC_ALPHA * 1.1);
    expect(cc.wCubic((d.now - t0) / 1000)).toBeLessThan(cc.cwnd - 10 * MSS);
    // Once W_est has reached the window before the cut, α is 1: one segment per RTT.
    for (let i = 0; i < 60; i++) d.round(rtt);
    expect(cc.wEst).toBeGreaterThan(100 * MSS);
    const w0 = cc.cwnd;
    for (let i = 0; i < 20; i++) d.round(rtt);
    const perRtt = (cc.cwnd - w0) / MSS / 20;
    expect(perRtt).toBeGreaterThan(0.9);
    expect(perRtt).toBeLessThan(1.2);
  });

  it('a spurious reduction is undone with its CUBIC state', () => {
    const d = inAvoidance(100);
    const cc = d.cc as Cubic;
    d.loss();
    d.run(2000, 100);
    const state = [cc.cwnd, cc.ssthresh, cc.wMax, cc.k, cc.epochStart];
    cc.enterPrrRecovery(cc.cwnd, d.una + cc.cwnd);
    expect(cc.wMax).not.toBe(state[2]);
    cc.undo();
    expect([cc.cwnd, cc.ssthresh, cc.wMax, cc.k, cc.epochStart]).toEqual(state);
  });

  it('a retransmission timeout: one segment, slow start to 0.7 of the window, then the cubic curve', () => {
    const d = inAvoidance(100);
    const cc = d.cc as Cubic;
    cc.onSackTimeout(100 * MSS, d.una + 100 * MSS);
    expect(cc.cwnd).toBe(MSS);
    expect(cc.ssthresh).toBe(70 * MSS);
    cc.endLoss();
    while (cc.cwnd < cc.ssthresh) d.ack(10);
    expect(cc.epochStart).toBe(-1);
    d.ack(10);
    expect(cc.epochStart).toBe(d.now);
    expect(cc.origin).toBe(100 * MSS);
  });
});

describe('HyStart++ (RFC 9406)', () => {
  function starting(): Driver {
    const cc = new Cubic(MSS, 0);
    expect(cc.cwnd).toBe(initialWindow(MSS));
    return new Driver(cc);
  }

  it('slow start doubles per round while the RTT holds; an RTT rise moves to CSS, then to avoidance after CSS_ROUNDS', () => {
    const d = starting();
    const cc = d.cc as Cubic;
    for (let i = 0; i < 4; i++) {
      const w = cc.cwnd;
      d.round(10);
      expect(cc.cwnd).toBe(2 * w); // one MSS per MSS acknowledged
    }
    expect(cc.hystart).toBe('ss');
    // The queue builds: the minimum RTT of a round is 4 ms (MIN_RTT_THRESH) above the last one's.
    d.round(14.5);
    expect(cc.hystart).toBe('css');
    expect(cc.ssthresh).toBe(INITIAL_SSTHRESH);
    // Conservative slow start: a quarter of slow start's growth.
    const w = cc.cwnd;
    d.round(14.5);
    expect(cc.cwnd / w).toBeGreaterThan(1.2);
    expect(cc.cwnd / w).toBeLessThan(1.3);
    for (let i = 1; i < HYSTART_CSS_ROUNDS; i++) d.round(14.5);
    expect(cc.hystart).toBe('done');
    // ssthresh = cwnd when the last CSS round ended (the ACKs after it grow cwnd in avoidance).
    expect(cc.ssthresh).toBeGreaterThan(w);
    expect(cc.cwnd - cc.ssthresh).toBeLessThan(2 * MSS);
    // Congestion avoidance without a W_max: the convex curve from the current window (K = 0).
    d.ack(14.5);
    expect(cc.k).toBe(0);
    expect(cc.origin).toBe(cc.ssthresh);
  });

  it('a small RTT rise (below the threshold) does not end slow start', () => {
    const d = starting();
    const cc = d.cc as Cubic;
    for (let i = 0; i < 3; i++) d.round(10);
    d.round(13.5);
    expect(cc.hystart).toBe('ss');
    // On a long path the threshold is a eighth of the RTT: 100 → 110 ms is noise.
    const e = starting();
    for (let i = 0; i < 3; i++) e.round(100);
    e.round(112);
    expect((e.cc as Cubic).hystart).toBe('ss');
    const f = starting();
    for (let i = 0; i < 3; i++) f.round(100);
    f.round(113);
    expect((f.cc as Cubic).hystart).toBe('css');
  });

  it('a false exit: the RTT falls back below the CSS baseline and slow start resumes', () => {
    const d = starting();
    const cc = d.cc as Cubic;
    for (let i = 0; i < 3; i++) d.round(10);
    d.round(20);
    expect(cc.hystart).toBe('css');
    d.round(10);
    expect(cc.hystart).toBe('ss');
    const w = cc.cwnd;
    d.round(10);
    expect(cc.cwnd).toBe(2 * w);
  });

  it('a loss in slow start ends HyStart++ (it runs in the initial slow start only)', () => {
    const d = starting();
    const cc = d.cc as Cubic;
    d.round(10);
    d.loss();
    expect(cc.hystart).toBe('done');
    expect(cc.ssthresh).toBeLessThan(INITIAL_SSTHRESH);
  });
});

describe('choosing the algorithm', () => {
  function open(opts: { congestion?: 'cubic' | 'newreno' }): TcpConnection {
    const out: Segment[] = [];
    const c = TcpConnection.fromSyn(makeSyn(1000, { mss: 1460 }), { emit: (s) => out.push(s), ...opts }, 0);
    return c;
  }

  it('CUBIC by default, NewReno on request; the process default applies to new connections only', () => {
    expect(open({}).congestion).toBe('cubic');
    expect(open({ congestion: 'newreno' }).congestion).toBe('newreno');
    const before = open({});
    try {
      setDefaultCongestion('newreno');
      expect(open({}).congestion).toBe('newreno');
      expect(open({ congestion: 'cubic' }).congestion).toBe('cubic');
      expect(before.congestion).toBe('cubic');
    } finally {
      setDefaultCongestion('cubic');
    }
  });
});
