import { describe, expect, it } from 'vitest';
import { NewReno, initialWindow } from '../../daemon/endpoint/tcp/congestion.js';
import { rfc6528Isn } from '../../daemon/endpoint/tcp/isn.js';
import { scaleFor } from '../../daemon/endpoint/tcp/options.js';
import { Reassembly } from '../../daemon/endpoint/tcp/reassembly.js';
import { RtoEstimator } from '../../daemon/endpoint/tcp/rto.js';
import { ACK, RST, SYN, resetFor } from '../../daemon/endpoint/tcp/segment.js';
import { ChunkPool, SendBuffer } from '../../daemon/endpoint/tcp/send-buffer.js';
import { seqAdd, seqDiff, seqGt, seqInWindow, seqLt, seqMax } from '../../daemon/endpoint/tcp/seq.js';

describe('seq', () => {
  it('compares and adds modulo 2^32', () => {
    expect(seqAdd(0xffffffff, 1)).toBe(0);
    expect(seqAdd(0, -1)).toBe(0xffffffff);
    expect(seqDiff(5, 0xfffffffb)).toBe(10);
    expect(seqLt(0xfffffff0, 5)).toBe(true);
    expect(seqGt(5, 0xfffffff0)).toBe(true);
    expect(seqMax(0xfffffff0, 5)).toBe(5);
    expect(seqInWindow(3, 0xfffffffe, 10)).toBe(true);
    expect(seqInWindow(9, 0xfffffffe, 10)).toBe(false);
    expect(seqInWindow(0xfffffffd, 0xfffffffe, 10)).toBe(false);
  });
});

describe('RtoEstimator (RFC 6298)', () => {
  it('starts at the initial value, follows samples, backs off and resets on a sample', () => {
    const r = new RtoEstimator({ initial: 1000, min: 200, max: 60_000 });
    expect(r.rto).toBe(1000);
    r.sample(100); // srtt 100, rttvar 50 → 300
    expect(r.rto).toBe(300);
    r.sample(100); // rttvar 37.5 → 250
    expect(r.rto).toBe(250);
    r.backoff();
    r.backoff();
    expect(r.rto).toBe(1000);
    r.sample(10); // rttvar 50.625, srtt 88.75 → 291.25, rounded up
    expect(r.rto).toBe(292);
    const fast = new RtoEstimator({ initial: 1000, min: 200, max: 60_000 });
    fast.sample(10);
    expect(fast.rto).toBe(200); // floor
    for (let i = 0; i < 20; i++) r.backoff();
    expect(r.rto).toBe(60_000);
  });
});

describe('Reassembly', () => {
  it('stores only what is new, drains in order, and limits pieces', () => {
    const q = new Reassembly(3);
    expect(q.insert(10, Buffer.from('KLMNO'))).toBe(true);
    expect(q.insert(8, Buffer.from('IJKLMNOPQ'))).toBe(true); // adds IJ and PQ
    expect(q.bytes).toBe(9);
    expect(q.pieces).toBe(3);
    expect(q.insert(30, Buffer.from('z'))).toBe(false); // limit
    expect(q.shift(0)).toBeNull();
    const parts: string[] = [];
    for (let b = q.shift(9); b !== null; b = q.shift(9 + parts.join('').length)) parts.push(b.toString());
    expect(parts.join('')).toBe('JKLMNOPQ');
    expect(q.empty).toBe(true);
  });

  it('works across the 2^32 wrap and reports SACK blocks latest first', () => {
    const q = new Reassembly(16);
    const base = 0xfffffff0;
    q.insert(seqAdd(base, 20), Buffer.alloc(10));
    q.insert(seqAdd(base, 40), Buffer.alloc(10));
    q.insert(seqAdd(base, 30), Buffer.alloc(5));
    expect(q.sackBlocks(4)).toEqual([
      [seqAdd(base, 20), seqAdd(base, 35)],
      [seqAdd(base, 40), seqAdd(base, 50)],
    ]);
    expect(q.shift(seqAdd(base, 25))!.length).toBe(5);
  });
});

describe('SendBuffer', () => {
  it('bounds writes, hands out views that never cross a chunk, and frees on ack', () => {
    const pool = new ChunkPool(8);
    const b = new SendBuffer(20, pool);
    expect(b.write(Buffer.from('abcdefghijklmnopqrstuvwxyz'))).toBe(20);
    expect(b.free).toBe(0);
    expect(b.view(0, 100).toString()).toBe('abcdefgh');
    expect(b.view(6, 100).toString()).toBe('gh');
    expect(b.view(16, 100).toString()).toBe('qrst');
    b.consume(10);
    expect(pool.idle).toBe(1);
    expect(b.view(0, 3).toString()).toBe('klm');
    expect(b.write(Buffer.from('0123456789AB'))).toBe(10);
    b.consume(20);
    expect(b.length).toBe(0);
    expect(pool.idle).toBeGreaterThanOrEqual(3);
  });
});

describe('NewReno', () => {
  it('slow start, halving on loss, partial and full ACKs, timeout', () => {
    const cc = new NewReno(1000, 0);
    expect(cc.cwnd).toBe(initialWindow(1000));
    expect(initialWindow(1000)).toBe(10_000);
    cc.onAck(1000);
    expect(cc.cwnd).toBe(11_000);
    cc.enterRecovery(20_000, 50_000, false);
    expect(cc.ssthresh).toBe(10_000);
    expect(cc.cwnd).toBe(13_000);
    cc.onDupAck();
    expect(cc.cwnd).toBe(14_000);
    cc.onPartialAck(3000);
    expect(cc.cwnd).toBe(12_000);
    expect(cc.mayRecover(40_000)).toBe(false);
    cc.onFullAck(5000);
    expect(cc.inRecovery).toBe(false);
    expect(cc.cwnd).toBe(6000);
    cc.onTimeout(8000, 60_000);
    expect(cc.cwnd).toBe(1000);
    expect(cc.ssthresh).toBe(4000);
  });
});

describe('helpers', () => {
  it('resetFor answers like a closed port', () => {
    const syn = { seq: 100, ack: 0, flags: SYN, window: 1, options: {}, payload: Buffer.alloc(0) };
    expect(resetFor(syn)).toMatchObject({ seq: 0, ack: 101, flags: RST | ACK });
    expect(resetFor({ ...syn, flags: ACK, ack: 555, payload: Buffer.alloc(10) })).toMatchObject({ seq: 555, flags: RST });
    expect(resetFor({ ...syn, flags: RST })).toBeNull();
  });

  it('RFC 6528 ISNs depend on the 4-tuple and advance with the clock', () => {
    const isn = rfc6528Isn(Buffer.from('secret'));
    const t = { localAddr: '10.0.0.1', localPort: 80, remoteAddr: '10.0.0.2', remotePort: 40000 };
    expect(isn(t, 1000)).not.toBe(isn({ ...t, remotePort: 40001 }, 1000));
    expect(seqDiff(isn(t, 1004), isn(t, 1000))).toBe(1000); // 4 µs ticks
    expect(rfc6528Isn(Buffer.from('other'))(t, 1000)).not.toBe(isn(t, 1000));
  });

  it('scaleFor picks the smallest sufficient shift', () => {
    expect(scaleFor(65535)).toBe(0);
    expect(scaleFor(65536)).toBe(1);
    expect(scaleFor(256 * 1024)).toBe(3);
    expect(scaleFor(2 ** 40)).toBe(14);
  });
});
