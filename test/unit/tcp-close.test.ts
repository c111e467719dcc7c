import { describe, expect, it } from 'vitest';
import { ACK, FIN, RST, type Segment } from '../../daemon/endpoint/tcp/index.js';
import { Net } from './tcp-link.js';

describe('tcp close', () => {
  it('half-close a→b: b keeps sending after a FIN, then closes; a goes through TIME-WAIT', () => {
    const net = new Net({ a: { timeWait: 10_000 } });
    net.establish();
    net.a.send(Buffer.from('request'), true);
    net.runUntil(() => net.b.ended, 5000);
    expect(net.b.data().toString()).toBe('request');
    expect(net.b.conn!.state).toBe('CLOSE-WAIT');
    expect(net.a.conn!.state).toBe('FIN-WAIT-1'); // b's ACK of the FIN is on its way
    net.runUntil(() => net.a.conn!.state === 'FIN-WAIT-2', 1000);
    // b streams a reply into the half-closed connection.
    const reply = Buffer.alloc(200_000, 7);
    net.b.send(reply, true);
    net.runUntil(() => net.a.ended, 10_000);
    expect(net.a.data().equals(reply)).toBe(true);
    expect(net.a.conn!.state).toBe('TIME-WAIT');
    net.runUntil(() => net.b.closeReason !== null, 10_000);
    expect(net.b.closeReason).toBe('normal'); // LAST-ACK → CLOSED
    const tw = net.now;
    net.runUntil(() => net.a.closeReason !== null, 100_000);
    expect(net.a.closeReason).toBe('normal');
    expect(net.now - tw).toBeGreaterThanOrEqual(10_000 - 20);
    expect(net.now - tw).toBeLessThanOrEqual(10_000);
  });

  it('half-close b→a: the passive side closes first and is the one in TIME-WAIT', () => {
    const net = new Net({ b: { timeWait: 5000 } });
    net.establish();
    net.b.send(Buffer.from('banner'), true);
    net.runUntil(() => net.a.ended, 5000);
    expect(net.a.conn!.state).toBe('CLOSE-WAIT');
    net.a.send(Buffer.from('more data after the peer FIN'), true);
    net.runUntil(() => net.b.ended && net.a.closeReason !== null, 5000);
    expect(net.b.data().toString()).toBe('more data after the peer FIN');
    expect(net.a.closeReason).toBe('normal');
    expect(net.b.conn!.state).toBe('TIME-WAIT');
    net.runUntil(() => net.b.closeReason === 'normal', 10_000);
  });

  it('simultaneous close: both go CLOSING → TIME-WAIT', () => {
    const net = new Net({ a: { timeWait: 1000 }, b: { timeWait: 1000 } });
    net.establish();
    net.a.conn!.shutdown();
    net.b.conn!.shutdown();
    expect(net.a.conn!.state).toBe('FIN-WAIT-1');
    net.runTo(net.now + 7); // both FINs crossed, ACKs in flight
    expect(net.a.conn!.state).toBe('CLOSING');
    expect(net.b.conn!.state).toBe('CLOSING');
    net.runTo(net.now + 10);
    expect(net.a.conn!.state).toBe('TIME-WAIT');
    expect(net.b.conn!.state).toBe('TIME-WAIT');
    net.runUntil(() => net.a.closeReason === 'normal' && net.b.closeReason === 'normal', 5000);
  });

  it('FIN carried on the last data segment; out-of-order FIN waits for the missing data', () => {
    const net = new Net({ a: { mss: 1000 }, b: { mss: 1000 } });
    const mss = 1000 - 12;
    net.connect();
    // Written and shut down before the handshake completes: both go out together, FIN on the last.
    net.a.send(Buffer.alloc(2 * mss, 3), true);
    expect(net.a.conn!.state).toBe('SYN-SENT');
    const first = net.a.conn!.snapshot().sndNxt;
    let held: Segment | null = null;
    net.filter = (from, seg) => {
      if (from === 'a' && seg.seq === first && seg.payload.length > 0 && held === null) {
        held = seg; // lose the first segment once
        return false;
      }
      return true;
    };
    net.runUntil(() => net.sent('a').some((x) => x.seg.flags & FIN), 1000);
    expect(net.a.conn!.state).toBe('FIN-WAIT-1');
    const finSeg = net.sent('a').find((x) => x.seg.flags & FIN)!;
    expect(finSeg.seg.payload.length).toBe(mss); // FIN rides on the second segment
    net.runTo(net.now + 8);
    expect(net.b.ended).toBe(false); // the FIN arrived, but out of order
    expect(net.b.conn!.snapshot().oooBytes).toBe(mss);
    net.runUntil(() => net.b.ended, 5000);
    expect(net.b.receivedBytes).toBe(2 * mss);
  });

  it('abort by a: RST reaches b, which closes with reset', () => {
    const net = new Net({});
    net.establish();
    net.a.conn!.abort();
    expect(net.a.closeReason).toBe('aborted');
    const rst = net.sent('a').at(-1)!.seg;
    expect(rst.flags & RST).toBeTruthy();
    net.runUntil(() => net.b.closeReason !== null, 1000);
    expect(net.b.closeReason).toBe('reset');
    expect(net.b.ended).toBe(false);
  });

  it('abort by b: RST reaches a, which closes with reset (with data in flight)', () => {
    const net = new Net({});
    net.establish();
    net.a.send(Buffer.alloc(100_000, 1));
    net.runTo(net.now + 3);
    net.b.conn!.abort();
    net.runUntil(() => net.a.closeReason !== null, 1000);
    expect(net.a.closeReason).toBe('reset');
    expect(net.b.closeReason).toBe('aborted');
    expect(net.a.conn!.nextDeadline()).toBeNull();
    // Segments still arriving at b get a RST from "the owner" (no connection any more).
    expect(net.sent('b').filter((x) => x.seg.flags & RST).length).toBeGreaterThanOrEqual(1);
  });

  it('TIME-WAIT expires after the configured 2·MSL and re-ACKs a retransmitted FIN', () => {
    const net = new Net({ a: { timeWait: 60_000 } });
    net.establish();
    // b's final ACK... is a's: make a close first, and lose a's last ACK once.
    net.a.conn!.shutdown();
    net.runUntil(() => net.b.ended, 1000);
    let lostAck = false;
    net.filter = (from, seg) => {
      if (from === 'a' && seg.flags === ACK && net.a.conn!.state === 'TIME-WAIT' && !lostAck) {
        lostAck = true;
        return false;
      }
      return true;
    };
    net.b.conn!.shutdown();
    net.runUntil(() => net.a.conn!.state === 'TIME-WAIT', 1000);
    const enteredAt = net.now;
    expect(net.a.conn!.nextDeadline()).toBe(enteredAt + 60_000);
    // b's FIN is retransmitted after its RTO; a answers and restarts its timer.
    net.runUntil(() => net.b.closeReason !== null, 10_000);
    expect(lostAck).toBe(true);
    expect(net.b.closeReason).toBe('normal');
    const reAck = net.sent('a').filter((x) => x.t > enteredAt).at(-1)!;
    expect(net.a.conn!.nextDeadline()).toBe(reAck.t + 60_000);
    net.runTo(reAck.t + 60_000 - 1);
    expect(net.a.conn!.state).toBe('TIME-WAIT');
    net.runTo(reAck.t + 60_000);
    expect(net.a.closeReason).toBe('normal');
    expect(net.a.conn!.nextDeadline()).toBeNull();
  });

  it('a newer SYN for a TIME-WAIT 4-tuple starts a new connection', () => {
    const net = new Net({ b: { timeWait: 60_000 } });
    net.establish();
    net.b.conn!.shutdown();
    net.runUntil(() => net.a.ended, 1000);
    net.a.conn!.shutdown();
    net.runUntil(() => net.b.conn!.state === 'TIME-WAIT' && net.a.closeReason !== null, 1000);
    const old = net.b.conn!;
    net.a.established = false;
    net.b.established = false;
    net.establish();
    expect(old.closed).toBe(true);
    expect(net.b.conn).not.toBe(old);
    expect(net.b.conn!.state).toBe('ESTABLISHED');
  });

  it('FIN-WAIT-2 times out when the peer goes silent', () => {
    const net = new Net({ a: { finWait2Timeout: 5000, keepalive: null } });
    net.establish();
    net.a.conn!.shutdown();
    net.runUntil(() => net.a.conn!.state === 'FIN-WAIT-2', 1000);
    const t = net.now;
    net.filter = (from) => from !== 'b'; // b vanishes
    net.runUntil(() => net.a.closeReason !== null, 20_000);
    expect(net.a.closeReason).toBe('timeout');
    expect(net.now - t).toBeGreaterThanOrEqual(4990);
    expect(net.now - t).toBeLessThanOrEqual(5000);
  });

  it('keepalive: probes an idle connection, and resets it after unanswered probes', () => {
    const net = new Net({ a: { keepalive: { idle: 10_000, interval: 1000, count: 3 } } });
    net.connect();
    net.runUntil(() => net.a.established, 1000);
    const t0 = net.now;
    net.runTo(t0 + 25_000);
    // Answered probes keep it open: one probe every idle period.
    expect(net.a.conn!.state).toBe('ESTABLISHED');
    expect(net.a.conn!.stats.keepaliveProbes).toBe(2);
    const probes = net.sent('a').filter((x) => x.t >= t0);
    expect(probes.map((x) => x.t - t0)).toEqual([0, 10_000, 20_010]); // [0] is the handshake ACK
    expect(probes.slice(1).every((x) => x.seg.seq === ((net.a.conn!.snapshot().sndUna - 1) >>> 0))).toBe(true);
    expect(net.sent('b').filter((x) => x.t > t0 + 5)).toHaveLength(2); // each one answered
    // Now b vanishes.
    net.filter = (from) => from !== 'b';
    const t1 = net.now;
    net.runUntil(() => net.a.closeReason !== null, t1 + 60_000);
    expect(net.a.closeReason).toBe('timeout');
    expect(net.a.conn!.stats.keepaliveProbes).toBe(2 + 3);
    expect(net.sent('a').at(-1)!.seg.flags & RST).toBeTruthy();
    expect(net.b.conn!.state).toBe('ESTABLISHED'); // b never heard a thing
  });
});
