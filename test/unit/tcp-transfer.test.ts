import { describe, expect, it } from 'vitest';
import { Net, Rng } from './tcp-link.js';

const MB = 1024 * 1024;

function bothWays(net: Net, size: number, seed: number, limit: number): { ab: Buffer; ba: Buffer } {
  const rng = new Rng(seed);
  const ab = rng.bytes(size);
  const ba = rng.bytes(size);
  net.establish();
  net.a.send(ab, true);
  net.b.send(ba, true);
  net.runUntil(() => net.a.ended && net.b.ended && net.a.sendDone && net.b.sendDone, limit, 'transfer');
  return { ab, ba };
}

describe('tcp transfer', () => {
  it('moves 5 MB each way over a clean link, intact', () => {
    const net = new Net({ link: { delay: 5 } });
    const { ab, ba } = bothWays(net, 5 * MB, 1, 60_000);
    expect(net.b.data().equals(ab)).toBe(true);
    expect(net.a.data().equals(ba)).toBe(true);
    expect(net.a.conn!.stats.retransmits).toBe(0);
    expect(net.b.conn!.stats.retransmits).toBe(0);
    // Segments are full-sized (bar chunk boundaries): far fewer than 2 per MSS.
    const dataSegs = net.sent('a', true).length;
    expect(dataSegs).toBeLessThan(Math.ceil((5 * MB) / net.a.conn!.negotiated.mss) * 1.05);
  });

  for (const seed of [7, 42]) {
    it(`moves 5 MB each way intact with 5% loss, reordering and duplicates (seed ${seed})`, () => {
      const net = new Net({ link: { delay: 5, loss: 0.05, reorder: 0.05, reorderDelay: 2, dup: 0.01, seed } });
      const { ab, ba } = bothWays(net, 5 * MB, seed, 3_600_000);
      expect(net.b.data().equals(ab)).toBe(true);
      expect(net.a.data().equals(ba)).toBe(true);
      const sa = net.a.conn!.stats;
      expect(sa.retransmits).toBeGreaterThan(0);
      expect(sa.fastRetransmits).toBeGreaterThan(0);
      expect(net.b.conn!.stats.oooSegments).toBeGreaterThan(0);
      // Both ends wind down: the one that closed first waits in TIME-WAIT, then all is closed.
      net.runTo(net.now + 200_000);
      expect(net.a.closeReason).toBe('normal');
      expect(net.b.closeReason).toBe('normal');
    });
  }

  it('with SACK, several holes in one window are all resent within one RTT; without, one per RTT', () => {
    const run = (sack: boolean): { times: number[]; net: Net } => {
      const net = new Net({ link: { delay: 5 }, a: { sack }, b: { sack } });
      net.establish();
      const base = net.a.conn!.snapshot().sndNxt;
      const mss = net.a.conn!.negotiated.mss;
      const lose = new Set([2, 5, 8].map((k) => (base + k * mss) >>> 0));
      const seen = new Set<number>();
      net.filter = (from, seg) => {
        if (from !== 'a' || !lose.has(seg.seq) || seen.has(seg.seq)) return true;
        seen.add(seg.seq);
        return false;
      };
      const data = new Rng(8).bytes(10 * mss); // fits the initial window: one burst
      net.a.send(data);
      net.runUntil(() => net.b.receivedBytes === data.length, 10_000);
      expect(net.b.data().equals(data)).toBe(true);
      expect(net.a.conn!.stats.rtoTimeouts).toBe(0);
      const times = net.sent('a', true).filter((x) => lose.has(x.seg.seq) && !x.dropped).map((x) => x.t);
      expect(times).toHaveLength(3);
      return { times, net };
    };
    const withSack = run(true);
    const noSack = run(false);
    const span = (t: number[]): number => Math.max(...t) - Math.min(...t);
    expect(span(withSack.times)).toBeLessThan(10); // one RTT is 10 ms
    expect(span(noSack.times)).toBeGreaterThanOrEqual(20); // NewReno: a partial ACK per hole
    expect(withSack.net.sent('b').some((x) => x.seg.options.sack !== undefined)).toBe(true);
    expect(noSack.net.sent('b').some((x) => x.seg.options.sack !== undefined)).toBe(false);
  });

  it('slow readers: 5 MB each way, windows close to zero, the senders probe, windows reopen', () => {
    const rcvBuf = 64 * 1024;
    const net = new Net({ link: { delay: 5 }, a: { rcvBuf }, b: { rcvBuf } });
    net.establish();
    const rng = new Rng(9);
    const ab = rng.bytes(5 * MB);
    const ba = rng.bytes(5 * MB);
    let maxUnconsumed = 0;
    for (const ep of [net.a, net.b]) {
      ep.autoConsume = false;
      // Each reader takes 64 KiB every 2 s (longer than the RTO, so probes must happen).
      const drain = (): void => {
        const c = ep.conn!;
        maxUnconsumed = Math.max(maxUnconsumed, c.unconsumedBytes);
        c.consume(Math.min(64 * 1024, c.unconsumedBytes));
        if (!ep.ended) net.at(net.now + 2000, drain);
      };
      net.at(net.now + 2000, drain);
    }
    net.a.send(ab, true);
    net.b.send(ba, true);
    net.runUntil(() => net.a.ended && net.b.ended, 1_000_000, 'slow transfer');
    expect(net.b.data().equals(ab)).toBe(true);
    expect(net.a.data().equals(ba)).toBe(true);
    // Backpressure: a receiver never held more than its buffer.
    expect(maxUnconsumed).toBeLessThanOrEqual(rcvBuf);
    for (const [snd, rcv] of [['a', 'b'] as const, ['b', 'a'] as const]) {
      // Zero windows were advertised, probes were sent, and the window reopened afterwards.
      const zero = net.sent(rcv).filter((x) => x.seg.window === 0 && !(x.seg.flags & 0x04));
      expect(zero.length).toBeGreaterThan(0);
      expect(net[snd].conn!.stats.persistProbes).toBeGreaterThan(0);
      expect(net[rcv].conn!.stats.windowUpdates).toBeGreaterThan(0);
      expect(net[snd].conn!.stats.rtoTimeouts).toBe(0);
      // The sender was held back by its send buffer: write() returned short, onWritable fired.
      expect(net[snd].writableEvents).toBeGreaterThan(0);
    }
    expect(net.now).toBeGreaterThan(150_000); // paced by the readers, not the link
  });

  it('Karn: without timestamps, the ACK of a retransmission is no RTT sample', () => {
    const net = new Net({ link: { delay: 5 }, a: { timestamps: false }, b: { timestamps: false } });
    net.establish();
    expect(net.a.conn!.negotiated.timestamps).toBe(false);
    net.a.send(Buffer.alloc(100, 1));
    net.runUntil(() => net.b.receivedBytes === 100, 1000);
    net.runTo(net.now + 100);
    expect(net.a.conn!.snapshot().rto).toBe(200);
    // Black-hole a→b for three timeouts: RTO 200 → 1600.
    net.filter = (from) => from !== 'a';
    net.a.conn!.write(Buffer.alloc(100, 2));
    net.runTo(net.now + 200 + 400 + 800 + 10);
    expect(net.a.conn!.stats.rtoTimeouts).toBe(3);
    net.filter = null;
    net.runUntil(() => net.b.receivedBytes === 200, 10_000);
    net.runTo(net.now + 100); // b's delayed ACK
    // The fourth retransmission got through and was acknowledged, but the backed-off RTO
    // (200·2^4) stays: that ACK is no sample...
    expect(net.a.conn!.stats.rtoTimeouts).toBe(4);
    expect(net.a.conn!.snapshot().sndUna).toBe(net.a.conn!.snapshot().sndMax);
    expect(net.a.conn!.snapshot().rto).toBe(3200);
    // ...until fresh data gives a clean sample.
    net.a.conn!.write(Buffer.alloc(100, 3));
    net.runTo(net.now + 100);
    expect(net.a.conn!.snapshot().rto).toBe(200);
  });

  it('a lost window update is recovered by the persist timer', () => {
    const rcvBuf = 10 * 1448; // whole segments, so the window closes exactly
    const net = new Net({ link: { delay: 5 }, b: { rcvBuf } });
    net.establish();
    net.b.autoConsume = false;
    const data = new Rng(5).bytes(64 * 1024);
    net.a.send(data, true);
    net.runUntil(() => net.b.conn!.unconsumedBytes === rcvBuf, 10_000);
    net.runTo(net.now + 50);
    // Drop every window update from b for a while.
    net.filter = (from, seg) => !(from === 'b' && seg.window > 0 && seg.payload.length === 0 && net.now < 20_000);
    net.b.autoConsume = true;
    net.b.conn!.consume(net.b.conn!.unconsumedBytes);
    net.runUntil(() => net.b.ended, 200_000);
    expect(net.b.data().equals(data)).toBe(true);
    expect(net.a.conn!.stats.persistProbes).toBeGreaterThan(0);
    // Probes went out with backoff while the updates were lost (no data retransmitted).
    const probes = net.sent('a').filter((x) => x.seg.payload.length === 0 && x.t > 100 && x.t < 20_000);
    expect(probes.length).toBeGreaterThanOrEqual(3);
    const gaps = probes.slice(1).map((p, i) => p.t - probes[i]!.t);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]).toBeGreaterThanOrEqual(gaps[i - 1]!);
    expect(net.a.conn!.stats.rtoTimeouts).toBe(0);
  });

  it('fast retransmit on three duplicate ACKs, well before the RTO', () => {
    const net = new Net({ link: { delay: 5 } });
    net.establish();
    const iss = net.a.conn!.snapshot().sndNxt;
    const mss = net.a.conn!.negotiated.mss;
    // Lose the third data segment once.
    const lostSeq = (iss + 2 * mss) >>> 0;
    let lost = false;
    net.filter = (from, seg) => {
      if (from === 'a' && seg.seq === lostSeq && seg.payload.length > 0 && !lost) {
        lost = true;
        return false;
      }
      return true;
    };
    const data = new Rng(2).bytes(20 * mss);
    net.a.send(data);
    net.runUntil(() => net.b.receivedBytes === data.length, 10_000);
    expect(net.b.data().equals(data)).toBe(true);
    const sends = net.sent('a', true).filter((x) => x.seg.seq === lostSeq);
    expect(sends).toHaveLength(2);
    const s = net.a.conn!.stats;
    expect(s.fastRetransmits).toBe(1);
    expect(s.rtoTimeouts).toBe(0);
    expect(s.dupAcksIn).toBeGreaterThanOrEqual(3);
    // Retransmitted one RTT (+ a little) after the loss, well before the 200 ms minimum RTO.
    expect(sends[1]!.t - sends[0]!.t).toBeLessThan(50);
    // The receiver's duplicate ACKs carried SACK blocks for the data above the hole.
    const dup = net.sent('b').find((x) => x.seg.options.sack !== undefined);
    expect(dup?.seg.options.sack?.[0]?.[0]).toBe((lostSeq + mss) >>> 0);
  });

  it('fast retransmit also when the receiver moves its window on every duplicate ACK (as Linux does)', () => {
    const net = new Net({ link: { delay: 5 } });
    net.establish();
    const iss = net.a.conn!.snapshot().sndNxt;
    const mss = net.a.conn!.negotiated.mss;
    const lostSeq = (iss + 2 * mss) >>> 0;
    let lost = false;
    let bump = 0;
    net.filter = (from, seg) => {
      if (from === 'a' && seg.seq === lostSeq && seg.payload.length > 0 && !lost) {
        lost = true;
        return false;
      }
      // Every ACK from b advertises a slightly different window.
      if (from === 'b') (seg as { window: number }).window = Math.max(1, seg.window - (++bump % 7));
      return true;
    };
    const data = new Rng(3).bytes(20 * mss);
    net.a.send(data);
    net.runUntil(() => net.b.receivedBytes === data.length, 10_000);
    expect(net.b.data().equals(data)).toBe(true);
    const s = net.a.conn!.stats;
    expect(s.fastRetransmits).toBe(1);
    expect(s.rtoTimeouts).toBe(0);
  });

  it('RTO backs off exponentially and gives up at the user timeout', () => {
    const net = new Net({ link: { delay: 5 }, a: { userTimeout: 30_000, rtoMax: 8000 } });
    net.establish();
    net.filter = (from) => from !== 'a';
    const t0 = net.now;
    net.a.send(Buffer.alloc(1000, 1));
    net.runUntil(() => net.a.closeReason !== null, 100_000);
    expect(net.a.closeReason).toBe('timeout');
    const times = net.sent('a', true).map((x) => x.t - t0);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    // 200 ms (minimum RTO after a ~10 ms RTT), then doubling, capped by rtoMax.
    expect(gaps.slice(0, 5)).toEqual([200, 400, 800, 1600, 3200]);
    expect(gaps.slice(5, 7)).toEqual([6400, 8000]);
    expect(net.now - t0).toBe(30_000);
    expect(net.a.conn!.stats.rtoTimeouts).toBe(gaps.length);
  });

  it('keeps going across sequence-number wraparound (ISN near 2^32)', () => {
    const net = new Net({
      link: { delay: 2, loss: 0.03, reorder: 0.05, seed: 11 },
      a: { isn: () => 0xffffffff - 5000 },
      b: { isn: () => 0xfffffff0 },
    });
    const { ab, ba } = bothWays(net, 512 * 1024, 4, 3_600_000);
    expect(net.b.data().equals(ab)).toBe(true);
    expect(net.a.data().equals(ba)).toBe(true);
    expect(net.a.conn!.snapshot().sndUna).toBeLessThan(0x80000000); // it did wrap
    expect(net.b.conn!.snapshot().sndUna).toBeLessThan(0x80000000);
  });

  it('delayed ACK: one segment is acknowledged after 40 ms, two at once', () => {
    const net = new Net({ link: { delay: 5 } });
    net.establish();
    net.a.conn!.write(Buffer.alloc(100)); // the first ACK also opens b's window past 64 KiB
    net.runTo(net.now + 100);
    const mark = net.log.length;
    net.a.conn!.write(Buffer.alloc(100));
    net.runTo(net.now + 100);
    const acks = net.log.slice(mark).filter((x) => x.from === 'b');
    expect(acks).toHaveLength(1);
    expect(acks[0]!.t - net.log[mark]!.t).toBe(5 + 40);
    const mark2 = net.log.length;
    const mss = net.a.conn!.negotiated.mss;
    net.a.conn!.write(Buffer.alloc(2 * mss));
    net.runTo(net.now + 100);
    const acks2 = net.log.slice(mark2).filter((x) => x.from === 'b');
    expect(acks2).toHaveLength(1);
    expect(acks2[0]!.t - net.log[mark2]!.t).toBe(5);
  });
});
