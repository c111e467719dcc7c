import { describe, expect, it } from 'vitest';
import { ACK, FIN, PSH, RST, SYN, TcpConnection, type Segment, type CloseReason } from '../../daemon/endpoint/tcp/index.js';
import { makeSyn } from './tcp-link.js';

const VM_ISN = 0x10000000;
const OUR_ISN = 0x20000000;

/** A connection accepted from a hand-made VM SYN (timestamps off unless asked), established. */
function established(opts: { ts?: boolean } = {}): {
  c: TcpConnection;
  out: Segment[];
  data: Buffer[];
  closed: CloseReason[];
  seg: (o: Partial<Segment>) => Segment;
} {
  const out: Segment[] = [];
  const data: Buffer[] = [];
  const closed: CloseReason[] = [];
  const synOpts = opts.ts ? { mss: 1460, ts: [100, 0] as const } : { mss: 1460 };
  const c = TcpConnection.fromSyn(
    makeSyn(VM_ISN, synOpts),
    {
      emit: (s) => out.push(s),
      isn: () => OUR_ISN,
      rcvBuf: 10_000,
      delayedAck: 0,
      handler: {
        onData: (b) => {
          data.push(Buffer.from(b));
          c.consume(b.length);
        },
        onClose: (r) => closed.push(r),
      },
    },
    0,
  );
  c.accept();
  const seg = (o: Partial<Segment>): Segment => ({
    seq: (VM_ISN + 1) >>> 0,
    ack: (OUR_ISN + 1) >>> 0,
    flags: ACK,
    window: 8000,
    options: {},
    payload: Buffer.alloc(0),
    ...o,
  });
  c.input(seg(opts.ts ? { options: { ts: [101, out[0]!.options.ts![0]] } } : {}), 1);
  expect(c.state).toBe('ESTABLISHED');
  out.length = 0;
  return { c, out, data, closed, seg };
}

describe('tcp robustness (RFC 9293 §3.10.7.4, RFC 5961)', () => {
  it('an out-of-window data segment gets an ACK and changes nothing', () => {
    const { c, out, data, seg } = established();
    const before = c.snapshot();
    c.input(seg({ seq: (VM_ISN + 1 + 50_000) >>> 0, payload: Buffer.from('far ahead'), flags: ACK | PSH }), 2);
    c.input(seg({ seq: (VM_ISN + 1 - 5000) >>> 0, payload: Buffer.from('long ago') }), 2);
    expect(out).toHaveLength(2);
    for (const s of out) {
      expect(s.flags).toBe(ACK);
      expect(s.ack).toBe((VM_ISN + 1) >>> 0);
      expect(s.payload.length).toBe(0);
    }
    expect(data).toHaveLength(0);
    expect(c.snapshot()).toEqual(before);
    expect(c.stats.unacceptable).toBe(2);
  });

  it('in-order data is delivered and acknowledged; a duplicate is acknowledged again', () => {
    const { c, out, data, seg } = established();
    c.input(seg({ payload: Buffer.from('hello') }), 2);
    expect(Buffer.concat(data).toString()).toBe('hello');
    expect(out.at(-1)!.ack).toBe((VM_ISN + 6) >>> 0);
    c.input(seg({ payload: Buffer.from('hello') }), 3);
    expect(data).toHaveLength(1);
    expect(out.at(-1)!.ack).toBe((VM_ISN + 6) >>> 0);
    // Overlapping retransmission: only the new tail is delivered.
    c.input(seg({ payload: Buffer.from('hello world') }), 4);
    expect(Buffer.concat(data).toString()).toBe('hello world');
  });

  it('out-of-order data is held, SACKed if permitted, and delivered once the hole fills', () => {
    const out: Segment[] = [];
    const got: Buffer[] = [];
    const c = TcpConnection.fromSyn(makeSyn(VM_ISN, { mss: 1460, sackPermitted: true }), {
      emit: (s) => out.push(s),
      isn: () => OUR_ISN,
      handler: { onData: (b) => got.push(Buffer.from(b)) },
    }, 0);
    c.accept();
    const base = (VM_ISN + 1) >>> 0;
    const mk = (off: number, s: string): Segment => ({
      seq: (base + off) >>> 0, ack: (OUR_ISN + 1) >>> 0, flags: ACK, window: 8000, options: {}, payload: Buffer.from(s),
    });
    c.input(mk(0, ''), 1);
    c.input(mk(10, 'KLMNO'), 2);
    c.input(mk(20, 'UVWXY'), 2);
    expect(got).toHaveLength(0);
    const dup = out.at(-1)!;
    expect(dup.ack).toBe(base);
    expect(dup.options.sack).toEqual([[(base + 20) >>> 0, (base + 25) >>> 0], [(base + 10) >>> 0, (base + 15) >>> 0]]);
    c.input(mk(0, 'ABCDEFGHIJ'), 3);
    expect(Buffer.concat(got).toString()).toBe('ABCDEFGHIJKLMNO');
    expect(out.at(-1)!.ack).toBe((base + 15) >>> 0);
    expect(out.at(-1)!.options.sack).toEqual([[(base + 20) >>> 0, (base + 25) >>> 0]]);
    c.input(mk(15, 'PQRST'), 4);
    expect(Buffer.concat(got).toString()).toBe('ABCDEFGHIJKLMNOPQRSTUVWXY');
    expect(out.at(-1)!.options.sack).toBeUndefined();
  });

  it('RST: exact sequence resets, in-window gets a challenge ACK, outside is ignored', () => {
    const a = established();
    a.c.input(a.seg({ flags: RST, seq: (VM_ISN + 1 + 100_000) >>> 0 }), 2);
    expect(a.out).toHaveLength(0);
    expect(a.c.state).toBe('ESTABLISHED');
    a.c.input(a.seg({ flags: RST, seq: (VM_ISN + 1 + 100) >>> 0 }), 2);
    expect(a.out).toHaveLength(1);
    expect(a.out[0]!.flags).toBe(ACK);
    expect(a.c.state).toBe('ESTABLISHED');
    expect(a.c.stats.challengeAcks).toBe(1);
    a.c.input(a.seg({ flags: RST }), 3);
    expect(a.c.state).toBe('CLOSED');
    expect(a.closed).toEqual(['reset']);
  });

  it('SYN on an established connection gets a challenge ACK and changes nothing', () => {
    const { c, out, seg } = established();
    const before = c.snapshot();
    c.input(seg({ flags: SYN, seq: (VM_ISN + 500) >>> 0, ack: 0 }), 2);
    expect(out).toHaveLength(1);
    expect(out[0]!.flags).toBe(ACK);
    expect(out[0]!.ack).toBe((VM_ISN + 1) >>> 0);
    expect(c.state).toBe('ESTABLISHED');
    expect(c.snapshot()).toEqual(before);
  });

  it('an ACK for data never sent is answered and dropped with its data', () => {
    const { c, out, data, seg } = established();
    c.input(seg({ ack: (OUR_ISN + 1000) >>> 0, payload: Buffer.from('x') }), 2);
    expect(data).toHaveLength(0);
    expect(out).toHaveLength(1);
    expect(c.snapshot().sndUna).toBe((OUR_ISN + 1) >>> 0);
  });

  it('an unacceptable ACK in SYN-RECEIVED is answered with RST', () => {
    const out: Segment[] = [];
    const c = TcpConnection.fromSyn(makeSyn(VM_ISN, {}), { emit: (s) => out.push(s), isn: () => OUR_ISN }, 0);
    c.accept();
    c.input({ seq: (VM_ISN + 1) >>> 0, ack: 12345, flags: ACK, window: 100, options: {}, payload: Buffer.alloc(0) }, 1);
    expect(out.at(-1)).toMatchObject({ flags: RST, seq: 12345 });
    expect(c.state).toBe('SYN-RECEIVED');
  });

  it('PAWS drops a segment with an old timestamp', () => {
    const { c, out, data, seg } = established({ ts: true });
    c.input(seg({ payload: Buffer.from('new'), options: { ts: [200, 0] } }), 2);
    expect(data).toHaveLength(1);
    c.input(seg({ seq: (VM_ISN + 4) >>> 0, payload: Buffer.from('old'), options: { ts: [150, 0] } }), 3);
    expect(data).toHaveLength(1);
    expect(c.stats.pawsDrops).toBe(1);
    expect(out.at(-1)!.options.ts![1]).toBe(200); // echoes TS.Recent
  });

  it('a zero window still accepts ACKs; data beyond it is trimmed and re-ACKed', () => {
    const out: Segment[] = [];
    const c = TcpConnection.fromSyn(makeSyn(VM_ISN, {}), {
      emit: (s) => out.push(s), isn: () => OUR_ISN, rcvBuf: 100, delayedAck: 0,
    }, 0);
    c.accept();
    const base = (VM_ISN + 1) >>> 0;
    c.input({ seq: base, ack: (OUR_ISN + 1) >>> 0, flags: ACK, window: 100, options: {}, payload: Buffer.alloc(0) }, 1);
    c.input({ seq: base, ack: (OUR_ISN + 1) >>> 0, flags: ACK, window: 100, options: {}, payload: Buffer.alloc(150, 1) }, 2);
    expect(c.unconsumedBytes).toBe(100); // only the window's worth
    expect(out.at(-1)!.window).toBe(0);
    c.write(Buffer.from('reply'));
    const sent = out.at(-1)!;
    expect(sent.payload.toString()).toBe('reply');
    // A zero-window probe carrying new data and an ACK of our reply.
    c.input({ seq: (base + 100) >>> 0, ack: (OUR_ISN + 6) >>> 0, flags: ACK, window: 100, options: {}, payload: Buffer.from('z') }, 3);
    expect(c.snapshot().sndUna).toBe((OUR_ISN + 6) >>> 0);
    expect(c.unconsumedBytes).toBe(100);
    expect(out.at(-1)!.ack).toBe((base + 100) >>> 0);
  });

  it('FIN with data, then our FIN: LAST-ACK closes normally', () => {
    const { c, out, data, seg, closed } = established();
    c.input(seg({ flags: ACK | FIN, payload: Buffer.from('bye') }), 2);
    expect(Buffer.concat(data).toString()).toBe('bye');
    expect(c.state).toBe('CLOSE-WAIT');
    expect(out.at(-1)!.ack).toBe((VM_ISN + 5) >>> 0);
    c.shutdown();
    expect(c.state).toBe('LAST-ACK');
    expect(out.at(-1)!.flags & FIN).toBeTruthy();
    c.input(seg({ seq: (VM_ISN + 5) >>> 0, ack: (OUR_ISN + 2) >>> 0 }), 3);
    expect(closed).toEqual(['normal']);
  });
});

describe('delayed ACK and TSO super-segments', () => {
  function withDelack(): { c: TcpConnection; out: Segment[]; base: number } {
    const out: Segment[] = [];
    const c = TcpConnection.fromSyn(makeSyn(VM_ISN, { mss: 1460 }), {
      emit: (s) => out.push(s), isn: () => OUR_ISN, rcvBuf: 256 * 1024, delayedAck: 40, mss: 1460,
      handler: { onData: (b) => c.consume(b.length) },
    }, 0);
    c.accept();
    const base = (VM_ISN + 1) >>> 0;
    c.input({ seq: base, ack: (OUR_ISN + 1) >>> 0, flags: ACK, window: 65535, options: {}, payload: Buffer.alloc(0) }, 1);
    out.length = 0;
    return { c, out, base };
  }

  it('one full-sized segment waits for the delayed ACK', () => {
    const { c, out, base } = withDelack();
    c.input({ seq: base, ack: (OUR_ISN + 1) >>> 0, flags: ACK, window: 65535, options: {}, payload: Buffer.alloc(1460) }, 2);
    expect(out).toHaveLength(0);
  });

  it('a super-segment of several MSS (a vnet-hdr VM\'s TSO frame taken whole) is ACKed at once', () => {
    const { c, out, base } = withDelack();
    c.input({ seq: base, ack: (OUR_ISN + 1) >>> 0, flags: ACK, window: 65535, options: {}, payload: Buffer.alloc(3 * 1460) }, 2);
    expect(out).toHaveLength(1);
    expect(out[0]!.ack).toBe((base + 3 * 1460) >>> 0);
  });
});
