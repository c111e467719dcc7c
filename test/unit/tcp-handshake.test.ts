import { describe, expect, it } from 'vitest';
import { ACK, RST, SYN, TcpConnection, type Segment } from '../../daemon/endpoint/tcp/index.js';
import { Net, makeSyn } from './tcp-link.js';

describe('tcp handshake', () => {
  it('negotiates MSS, window scale, SACK and timestamps', () => {
    const net = new Net({ a: { mss: 1460, rcvBuf: 1 << 20, isn: () => 1000 }, b: { mss: 1400, rcvBuf: 1 << 18, isn: () => 5000 } });
    net.establish();
    const [syn, synAck, ack] = net.log.map((x) => x.seg);
    expect(syn!.flags).toBe(SYN);
    expect(syn!.seq).toBe(1000);
    expect(syn!.options.mss).toBe(1460);
    expect(syn!.options.wscale).toBe(5); // 1 MiB >> 5 = 32768
    expect(syn!.options.sackPermitted).toBe(true);
    expect(syn!.options.ts?.[1]).toBe(0);
    expect(synAck!.flags).toBe(SYN | ACK);
    expect(synAck!.seq).toBe(5000);
    expect(synAck!.ack).toBe(1001);
    expect(synAck!.options.mss).toBe(1400);
    expect(synAck!.options.wscale).toBe(3); // 256 KiB >> 3 = 32768
    expect(synAck!.options.ts?.[1]).toBe(syn!.options.ts?.[0]);
    expect(synAck!.window).toBe(0xffff); // SYN windows are never scaled
    expect(ack!.flags).toBe(ACK);
    expect(ack!.ack).toBe(5001);
    expect(ack!.window).toBe((1 << 20) >> 5);
    const na = net.a.conn!.negotiated;
    const nb = net.b.conn!.negotiated;
    expect(na).toMatchObject({ sndScale: 3, rcvScale: 5, sack: true, timestamps: true, peerMss: 1400, mss: 1400 - 12 });
    expect(nb).toMatchObject({ sndScale: 5, rcvScale: 3, sack: true, timestamps: true, peerMss: 1460, mss: 1400 - 12 });
    expect(net.a.conn!.state).toBe('ESTABLISHED');
    expect(net.b.conn!.state).toBe('ESTABLISHED');
    expect(net.a.conn!.snapshot().sndWnd).toBe(0xffff); // from the SYN-ACK, unscaled
    expect(net.b.conn!.snapshot().sndWnd).toBe(1 << 20);
  });

  it('offers nothing the peer did not offer (passive side)', () => {
    const out: Segment[] = [];
    const c = TcpConnection.fromSyn(makeSyn(77, {}), { emit: (s) => out.push(s), rcvBuf: 1 << 20, isn: () => 9 }, 0);
    expect(c.state).toBe('SYN-PENDING');
    expect(out).toHaveLength(0);
    c.accept();
    expect(out).toHaveLength(1);
    const sa = out[0]!;
    expect(sa.flags).toBe(SYN | ACK);
    expect(sa.ack).toBe(78);
    expect(sa.options.wscale).toBeUndefined();
    expect(sa.options.sackPermitted).toBeUndefined();
    expect(sa.options.ts).toBeUndefined();
    expect(sa.options.mss).toBe(1460);
    expect(c.negotiated).toMatchObject({ sndScale: 0, rcvScale: 0, sack: false, timestamps: false, mss: 536 });
    // Without scaling the window field caps at 65535 even with 1 MiB of buffer.
    c.input({ seq: 78, ack: 10, flags: ACK, window: 1000, options: {}, payload: Buffer.alloc(0) }, 1);
    expect(c.state).toBe('ESTABLISHED');
    c.write(Buffer.alloc(10));
    expect(out.at(-1)!.window).toBe(0xffff);
  });

  it('refuse answers the SYN with RST|ACK and closes', () => {
    const net = new Net({ synPolicy: 'refuse' });
    net.connect();
    net.runUntil(() => net.a.closeReason !== null, 5000);
    expect(net.a.closeReason).toBe('refused');
    expect(net.b.closeReason).toBe('refused');
    const rst = net.sent('b')[0]!.seg;
    expect(rst.flags).toBe(RST | ACK);
    expect(rst.ack).toBe((net.sent('a')[0]!.seg.seq + 1) >>> 0);
    expect(net.sent('b')).toHaveLength(1);
  });

  it('drop never answers: the active side retransmits its SYN with backoff and times out', () => {
    const net = new Net({ synPolicy: 'drop', a: { synRetries: 4, rtoInitial: 1000 } });
    net.connect();
    net.runUntil(() => net.a.closeReason !== null, 200_000);
    expect(net.b.closeReason).toBe('timeout');
    expect(net.sent('b')).toHaveLength(0);
    const syns = net.sent('a').map((x) => x.t);
    expect(syns).toEqual([0, 1000, 3000, 7000, 15000]);
    expect(net.a.closeReason).toBe('timeout');
    expect(net.now).toBe(31000);
  });

  it('active open into a peer that never answers times out', () => {
    const net = new Net({ synPolicy: 'absent', a: { synRetries: 2 } });
    net.connect();
    net.runUntil(() => net.a.closeReason !== null, 60_000);
    expect(net.a.closeReason).toBe('timeout');
    expect(net.sent('a').every((x) => x.seg.flags === SYN)).toBe(true);
    expect(net.sent('a')).toHaveLength(3);
    expect(net.a.conn!.nextDeadline()).toBeNull();
  });

  it('a pending SYN is not answered until the owner decides; repeated SYNs are ignored', () => {
    const net = new Net({ synPolicy: 'pending' });
    net.connect();
    net.runTo(3500); // SYN at 0, 1000, 3000
    expect(net.sent('a')).toHaveLength(3);
    expect(net.sent('b')).toHaveLength(0);
    expect(net.b.conn!.state).toBe('SYN-PENDING');
    net.b.conn!.accept();
    net.runUntil(() => net.a.established && net.b.established, 10_000);
    expect(net.sent('b')[0]!.seg.flags).toBe(SYN | ACK);
  });

  it('a lost SYN-ACK is retransmitted, and a repeated SYN gets it again', () => {
    const net = new Net({});
    let dropped = 0;
    net.filter = (from, seg) => !(from === 'b' && seg.flags & SYN && dropped++ < 1);
    net.establish();
    const synAcks = net.sent('b').filter((x) => x.seg.flags & SYN);
    expect(synAcks.length).toBeGreaterThanOrEqual(2);
    expect(synAcks[0]!.dropped).toBe(true);
    expect(synAcks[1]!.seg.seq).toBe(synAcks[0]!.seg.seq);
  });

  it('simultaneous open reaches ESTABLISHED on both sides', () => {
    const outA: Segment[] = [];
    const outB: Segment[] = [];
    const a = TcpConnection.connect({ emit: (s) => outA.push(s), isn: () => 100 }, 0);
    const b = TcpConnection.connect({ emit: (s) => outB.push(s), isn: () => 900 }, 0);
    a.input(outB[0]!, 1);
    b.input(outA[0]!, 1);
    expect(a.state).toBe('SYN-RECEIVED');
    expect(b.state).toBe('SYN-RECEIVED');
    a.input(outB[1]!, 2); // b's SYN-ACK
    b.input(outA[1]!, 2);
    expect(a.state).toBe('ESTABLISHED');
    expect(b.state).toBe('ESTABLISHED');
  });

  it('SYN-SENT answers a wrong ACK with RST and ignores an unacceptable RST', () => {
    const out: Segment[] = [];
    const a = TcpConnection.connect({ emit: (s) => out.push(s), isn: () => 100 }, 0);
    a.input({ seq: 5, ack: 999, flags: SYN | ACK, window: 100, options: {}, payload: Buffer.alloc(0) }, 1);
    expect(out.at(-1)).toMatchObject({ flags: RST, seq: 999 });
    a.input({ seq: 5, ack: 999, flags: RST | ACK, window: 0, options: {}, payload: Buffer.alloc(0) }, 1);
    expect(a.state).toBe('SYN-SENT');
    a.input({ seq: 0, ack: 101, flags: RST | ACK, window: 0, options: {}, payload: Buffer.alloc(0) }, 1);
    expect(a.state).toBe('CLOSED');
  });

  it('data written before the handshake is sent after it', () => {
    const net = new Net({});
    net.connect();
    expect(net.a.conn!.write(Buffer.from('early'))).toBe(5);
    net.runUntil(() => net.b.receivedBytes === 5, 5000);
    expect(net.b.data().toString()).toBe('early');
  });
});
