/**
 * Offload frames to and from VMs with a virtio-net header: the endpoint's coalescer (segments
 * back to back → one GSO frame; every boundary that must split it), the frames it builds
 * (segmented back by normalizeOffload they are exactly the segments, with valid checksums), the
 * switch handing them to a vnet port without a copy and to a plain port segmented, and a VM's
 * TSO frame reaching the gateway whole with its partial checksum not verified.
 */
import { describe, expect, it } from 'vitest';
import { TcpCoalescer } from '../../daemon/endpoint/tcp-coalescer.js';
import type { FlowAddr, IpAddr } from '../../daemon/endpoint/addr.js';
import type { Segment } from '../../daemon/endpoint/tcp/index.js';
import { tcpFrame, type L2 } from '../../daemon/gateway/frames.js';
import { dissect } from '../../daemon/gateway/dissect.js';
import { MAX_GSO_SEGMENTS, MIN_GSO_SIZE, normalizeOffload, tcpOffloadWhole } from '../../daemon/wire/gso.js';
import { GSO_MAX_FRAME, hasPartialCsum, hasVnetHeadroom, parseVnetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VNET_HDR_LEN, withVnetHdr } from '../../daemon/wire/vnet.js';
import { Network, type GatewayHandler } from '../../daemon/switch/network.js';
import { VPort } from '../support/vnet-port.js';
import { pseudoHeaderSumV4At } from '../../daemon/wire/checksum.js';

const ACK = 0x10;
const PSH = 0x08;
const FIN = 0x01;
const MSS = 1448;
const L2A: L2 = { vmMac: 0x020000000001, gwMac: 0x02aaaaaaaaaa };
const v4 = (a: number, b: number, c: number, d: number): IpAddr => ({ v: 4, n: ((a << 24) | (b << 16) | (c << 8) | d) >>> 0 }) as IpAddr;
const v6 = (last: number): IpAddr => {
  const b = Buffer.alloc(16);
  b[0] = 0xfd;
  b[15] = last;
  return { v: 6, b } as IpAddr;
};
const flow4: FlowAddr = { vmIp: v4(10, 0, 0, 2), vmPort: 40000, remoteIp: v4(10, 200, 0, 2), remotePort: 80 };
const flow6: FlowAddr = { vmIp: v6(2), vmPort: 40001, remoteIp: v6(9), remotePort: 443 };

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

function seg(seq: number, len: number, o: { flags?: number; ts?: [number, number]; ack?: number; window?: number; sack?: [number, number][] } = {}): Segment {
  return {
    seq: seq >>> 0,
    ack: o.ack ?? 1000,
    flags: o.flags ?? ACK,
    window: o.window ?? 500,
    options: { ...(o.ts ? { ts: o.ts } : {}), ...(o.sack ? { sack: o.sack } : {}) },
    payload: bytes(len, seq),
  };
}

function counters(): { tcpSuperOut: number; tcpOffloadSegments: number; tcpOffloadFrames: number } {
  return { tcpSuperOut: 0, tcpOffloadSegments: 0, tcpOffloadFrames: 0 };
}

/** A frame the coalescer sent, segmented back into plain frames (checksums filled in). */
function plain(frame: Buffer): Buffer[] {
  expect(hasVnetHeadroom(frame)).toBe(true);
  const out: Buffer[] = [];
  expect(normalizeOffload(withVnetHdr(frame), out)).toBeGreaterThan(0);
  return out;
}

interface Seen {
  seq: number;
  flags: number;
  payload: Buffer;
  ts: readonly [number, number] | undefined;
}

function seen(frames: Buffer[]): Seen[] {
  return frames.map((f) => {
    const d = dissect(f);
    if (d.kind !== 'ipv4' && d.kind !== 'ipv6') throw new Error(`not IP: ${d.kind}`);
    if (d.tcp === undefined) throw new Error('not TCP (or a bad checksum)');
    const ts = d.tcp.options.timestamp;
    return { seq: d.tcp.seq, flags: d.tcp.flags & 0xff, payload: Buffer.from(d.tcp.payload), ts: ts ? [ts.value, ts.echo] : undefined };
  });
}

function expectSegments(got: Buffer[], want: Segment[]): void {
  const s = seen(got.flatMap(plain));
  expect(s.map((x) => [x.seq, x.flags, x.payload.length])).toEqual(want.map((w) => [w.seq, w.flags, w.payload.length]));
  for (let i = 0; i < want.length; i++) expect(s[i]!.payload.equals(want[i]!.payload)).toBe(true);
}

describe('TcpCoalescer', () => {
  it('turns back-to-back full segments into one GSO frame (PSH on the last), which segments back exactly', () => {
    const out: Buffer[] = [];
    const c = new TcpCoalescer((f) => out.push(f), counters());
    const segs = [seg(1, MSS, { ts: [5, 6] }), seg(1 + MSS, MSS, { ts: [5, 6] }), seg(1 + 2 * MSS, MSS, { ts: [5, 6] }), seg(1 + 3 * MSS, 100, { flags: ACK | PSH, ts: [5, 6] })];
    for (const s of segs) c.push(L2A, flow4, s);
    // PSH closes the frame: sent at once, not at the end of the task.
    expect(out).toHaveLength(1);
    const h = parseVnetHdr(withVnetHdr(out[0]!));
    expect(h.ok && h.value).toMatchObject({ flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: MSS, csumStart: 34, csumOffset: 16, hdrLen: 34 + 32 });
    expect(out[0]!.length).toBe(14 + 20 + 32 + 3 * MSS + 100);
    // The TCP checksum field holds the pseudo-header sum over the whole segment (as Linux leaves it).
    expect(out[0]!.readUInt16BE(34 + 16)).toBe(pseudoHeaderSumV4At(out[0]!, 14, 6, 32 + 3 * MSS + 100));
    expectSegments(out, segs);
    const per = seen(plain(out[0]!));
    expect(per.map((p) => p.flags)).toEqual([ACK, ACK, ACK, ACK | PSH]);
    expect(per.every((p) => p.ts?.[0] === 5 && p.ts[1] === 6)).toBe(true);
  });

  it('sends what it holds at the end of the task (a microtask), as one frame', async () => {
    const out: Buffer[] = [];
    const k = counters();
    const c = new TcpCoalescer((f) => out.push(f), k);
    const segs = [seg(100, MSS), seg(100 + MSS, MSS)];
    for (const s of segs) c.push(L2A, flow4, s);
    expect(out).toHaveLength(0);
    await Promise.resolve();
    expect(out).toHaveLength(1);
    expectSegments(out, segs);
    expect(k).toEqual({ tcpSuperOut: 1, tcpOffloadSegments: 2, tcpOffloadFrames: 1 });
  });

  it('a single segment is a NEEDS_CSUM frame without GSO', () => {
    const out: Buffer[] = [];
    const c = new TcpCoalescer((f) => out.push(f), counters());
    c.push(L2A, flow4, seg(7, 0)); // a pure ACK: not data, sent at once
    c.push(L2A, flow4, seg(7, 10, { flags: ACK | PSH }));
    expect(out).toHaveLength(2);
    for (const f of out) {
      const h = parseVnetHdr(withVnetHdr(f));
      expect(h.ok && h.value.gsoType).toBe(VIRTIO_NET_HDR_GSO_NONE);
      expect(h.ok && h.value.flags).toBe(VIRTIO_NET_HDR_F_NEEDS_CSUM);
    }
    // Padded to the Ethernet minimum.
    expect(out[0]!.length).toBe(60);
    expectSegments(out, [seg(7, 0), seg(7, 10, { flags: ACK | PSH })]);
  });

  it('splits at a sequence gap, a short segment, a changed ack, window or timestamp, and another flow', () => {
    const cases: [string, Segment[], FlowAddr[], number][] = [
      ['seq gap', [seg(1, MSS), seg(1 + MSS + 1, MSS)], [flow4, flow4], 2],
      ['short before full', [seg(1, MSS), seg(1 + MSS, 500), seg(1 + MSS + 500, MSS)], [flow4, flow4, flow4], 2],
      ['ack changed', [seg(1, MSS), seg(1 + MSS, MSS, { ack: 2000 })], [flow4, flow4], 2],
      ['window changed', [seg(1, MSS), seg(1 + MSS, MSS, { window: 9 })], [flow4, flow4], 2],
      ['timestamp changed', [seg(1, MSS, { ts: [1, 2] }), seg(1 + MSS, MSS, { ts: [2, 2] })], [flow4, flow4], 2],
      ['timestamp gone', [seg(1, MSS, { ts: [1, 2] }), seg(1 + MSS, MSS)], [flow4, flow4], 2],
      ['sack blocks', [seg(1, MSS), seg(1 + MSS, MSS, { sack: [[9000, 9100]] })], [flow4, flow4], 2],
      ['larger than the first', [seg(1, 1000), seg(1001, MSS)], [flow4, flow4], 2],
      ['another flow', [seg(1, MSS), seg(1 + MSS, MSS)], [flow4, { ...flow4 }], 2],
      ['after FIN', [seg(1, MSS, { flags: ACK | FIN }), seg(1 + MSS, MSS)], [flow4, flow4], 2],
      ['after PSH', [seg(1, MSS, { flags: ACK | PSH }), seg(1 + MSS, MSS)], [flow4, flow4], 2],
      ['a SYN-ACK', [seg(1, 0, { flags: 0x12 }), seg(2, MSS)], [flow4, flow4], 2],
    ];
    for (const [what, segs, flows, frames] of cases) {
      const out: Buffer[] = [];
      const c = new TcpCoalescer((f) => out.push(f), counters());
      segs.forEach((s, i) => c.push(L2A, flows[i]!, s));
      c.flush();
      expect(out.length, what).toBe(frames);
      expectSegments(out, segs);
    }
  });

  it('keeps each frame within 64 KiB of IP packet (the IPv4 total length)', () => {
    const out: Buffer[] = [];
    const c = new TcpCoalescer((f) => out.push(f), counters());
    const segs: Segment[] = [];
    for (let i = 0; i < 100; i++) segs.push(seg(5 + i * MSS, MSS, { ts: [1, 1] }));
    for (const s of segs) c.push(L2A, flow4, s);
    c.flush();
    // 65535 - 20 (IP) - 32 (TCP with timestamps) = 65483 bytes: 45 segments of 1448.
    expect(out.map((f) => (f.length - 14 - 20 - 32) / MSS)).toEqual([45, 45, 10]);
    for (const f of out) expect(f.readUInt16BE(14 + 2)).toBeLessThanOrEqual(0xffff);
    expect(out[0]!.readUInt16BE(14 + 2)).toBe(20 + 32 + 45 * MSS);
    expectSegments(out, segs);
  });

  it('IPv6: GSO TCPV6, the payload length at most 65535', () => {
    const out: Buffer[] = [];
    const c = new TcpCoalescer((f) => out.push(f), counters());
    const segs: Segment[] = [];
    for (let i = 0; i < 50; i++) segs.push(seg(0xfffff000 + i * 1428, 1428));
    for (const s of segs) c.push(L2A, flow6, s); // wraps around 2^32 too
    c.flush();
    const h = parseVnetHdr(withVnetHdr(out[0]!));
    expect(h.ok && h.value).toMatchObject({ gsoType: VIRTIO_NET_HDR_GSO_TCPV6, gsoSize: 1428, csumStart: 54, csumOffset: 16 });
    expect(out.map((f) => f.readUInt16BE(14 + 4))).toEqual([20 + 45 * 1428, 20 + 5 * 1428]);
    expectSegments(out, segs);
  });

  it('IPv6 with an MSS whose 16-bit payload length would allow more: no frame beyond what a vnet-hdr port carries', () => {
    const out: Buffer[] = [];
    const c = new TcpCoalescer((f) => out.push(f), counters());
    // 1679 (no timestamps): 39 segments = 65481 bytes of payload, within IPv6's 65535, but the
    // frame would be 65555 bytes, over GSO_MAX_FRAME.
    const segs: Segment[] = [];
    for (let i = 0; i < 80; i++) segs.push(seg(1 + i * 1679, 1679));
    for (const s of segs) c.push(L2A, flow6, s);
    c.flush();
    for (const f of out) expect(f.length).toBeLessThanOrEqual(GSO_MAX_FRAME);
    expect(out.length).toBeGreaterThan(2);
    expectSegments(out, segs);
  });

  it('a tiny MSS never makes a frame of more segments than normalizeOffload cuts', () => {
    const out: Buffer[] = [];
    const c = new TcpCoalescer((f) => out.push(f), counters());
    const segs: Segment[] = [];
    for (let i = 0; i < 3000; i++) segs.push(seg(1 + i * 8, 8));
    for (const s of segs) c.push(L2A, flow4, s);
    c.flush();
    for (const f of out) {
      const h = parseVnetHdr(withVnetHdr(f));
      // Under MIN_GSO_SIZE (normalizeOffload refuses such a gso_size): one segment per frame.
      expect(h.ok && h.value.gsoType).toBe(VIRTIO_NET_HDR_GSO_NONE);
    }
    expect(out).toHaveLength(segs.length);
    expectSegments(out, segs);
    // At MIN_GSO_SIZE they coalesce, never past MAX_GSO_SEGMENTS.
    const out2: Buffer[] = [];
    const c2 = new TcpCoalescer((f) => out2.push(f), counters());
    const segs2: Segment[] = [];
    for (let i = 0; i < 3000; i++) segs2.push(seg(1 + i * MIN_GSO_SIZE, MIN_GSO_SIZE));
    for (const s of segs2) c2.push(L2A, flow4, s);
    c2.flush();
    expect(out2.length).toBeLessThan(segs2.length);
    for (const f of out2) {
      const h = parseVnetHdr(withVnetHdr(f));
      const n = Math.ceil((f.length - 14 - 20 - 20) / (h.ok && h.value.gsoSize > 0 ? h.value.gsoSize : f.length));
      expect(n).toBeLessThanOrEqual(MAX_GSO_SEGMENTS);
    }
    expectSegments(out2, segs2);
  });

  it('at a 65520 MTU one segment fills a frame: sent at once, NEEDS_CSUM only', () => {
    const out: Buffer[] = [];
    const c = new TcpCoalescer((f) => out.push(f), counters());
    c.push(L2A, flow4, seg(1, 65480));
    expect(out).toHaveLength(1);
    const h = parseVnetHdr(withVnetHdr(out[0]!));
    expect(h.ok && h.value.gsoType).toBe(VIRTIO_NET_HDR_GSO_NONE);
    expectSegments(out, [seg(1, 65480)]);
  });
});

describe('jumbo frames from the slab', () => {
  it('two 64 KiB frames to a plain VM share slab memory without overlapping, both intact', () => {
    const s1 = seg(1, 65000);
    const s2 = seg(65001, 65000);
    const f1 = tcpFrame(L2A, flow4.remoteIp, 80, flow4.vmIp, 40000, s1);
    const f2 = tcpFrame(L2A, flow4.remoteIp, 80, flow4.vmIp, 40000, s2);
    // Slab memory (1 MiB), not an ArrayBuffer of the frame's own size.
    expect([f1.buffer.byteLength, f2.buffer.byteLength]).toEqual([1 << 20, 1 << 20]);
    if (f1.buffer === f2.buffer) expect(f2.byteOffset).toBeGreaterThanOrEqual(f1.byteOffset + f1.length);
    expect(seen([f1, f2]).map((x) => x.payload.equals(x.seq === 1 ? s1.payload : s2.payload))).toEqual([true, true]);
  });
});

describe('the switch and offload frames', () => {
  const GW = 0x02aaaaaaaaaa;
  const mk = (): { net: Network; v: VPort; p: VPort; got: Buffer[] } => {
    const net = new Network({ name: 'n', mtu: 1500, gatewayMac: GW, clock: () => 0 });
    const v = new VPort('v', VNET_HDR_LEN);
    const p = new VPort('p', 0);
    net.attach('v', v, 0x020000000001);
    net.attach('p', p, 0x020000000002);
    const got: Buffer[] = [];
    const h: GatewayHandler = { input: (frames) => got.push(...frames) };
    net.setGateway(h);
    return { net, v, p, got };
  };
  const superFrame = (l2: L2): Buffer => {
    const out: Buffer[] = [];
    const c = new TcpCoalescer((f) => out.push(f), counters());
    for (let i = 0; i < 4; i++) c.push(l2, flow4, seg(1 + i * MSS, MSS));
    c.flush();
    return out[0]!;
  };

  it('to a vnet port: the header and frame as one view of the frame memory, no copy', () => {
    const { net, v } = mk();
    expect(net.offloadsTo(0x020000000001)).toBe(true);
    expect(net.offloadsTo(0x020000000002)).toBe(false);
    // A port that says it takes no offloads now (a vhost-user guest that did not negotiate them).
    v.offloadsOk = (): boolean => false;
    expect(net.offloadsTo(0x020000000001)).toBe(false);
    delete v.offloadsOk;
    const f = superFrame(L2A);
    net.fromGateway([f]);
    expect(v.sent).toHaveLength(1);
    expect(v.sent[0]!.buffer).toBe(f.buffer);
    expect(v.sent[0]!.byteOffset).toBe(f.byteOffset - VNET_HDR_LEN);
    expect(v.sent[0]!.length).toBe(f.length + VNET_HDR_LEN);
    net.close();
  });

  it('a plain gateway frame to a vnet port gets a zero header', () => {
    const { net, v } = mk();
    const f = tcpFrame(L2A, flow4.remoteIp, 80, flow4.vmIp, 40000, seg(1, 10));
    net.fromGateway([f]);
    expect(v.sent[0]!.subarray(0, VNET_HDR_LEN).equals(Buffer.alloc(VNET_HDR_LEN))).toBe(true);
    expect(v.sent[0]!.subarray(VNET_HDR_LEN).equals(f)).toBe(true);
    net.close();
  });

  it('to a port without the header (or a capture): segmented, checksummed', () => {
    const { net, p } = mk();
    const f = superFrame({ vmMac: 0x020000000002, gwMac: GW });
    net.fromGateway([f]);
    expect(p.sent).toHaveLength(4);
    expect(seen(p.sent).map((s) => s.payload.length)).toEqual([MSS, MSS, MSS, MSS]);
    net.close();
  });

  it("a VM's TSO frame reaches the gateway whole, its partial checksum not verified; a bad IP checksum still fails", () => {
    const { net, v, got } = mk();
    // The VM's TSO frame: built as the endpoint builds one (the same layout Linux hands a TAP).
    const f = superFrame({ vmMac: GW, gwMac: 0x020000000001 });
    const fromVm = Buffer.from(withVnetHdr(f));
    v.handler([fromVm]);
    expect(got).toHaveLength(1);
    expect(got[0]!.length).toBe(f.length);
    expect(hasPartialCsum(got[0]!)).toBe(true);
    const d = dissect(got[0]!);
    expect(d.kind === 'ipv4' && d.tcp?.payload.length).toBe(4 * MSS);
    // The same frame without the mark fails the TCP checksum: the mark is what skips it.
    expect(dissect(Buffer.from(got[0]!)).kind).toBe('invalid');
    // A broken IPv4 header checksum is still caught.
    const bad = Buffer.from(fromVm);
    bad[VNET_HDR_LEN + 14 + 10] ^= 0xff;
    got.length = 0;
    v.handler([bad]);
    expect(got).toHaveLength(1);
    expect(dissect(got[0]!).kind).toBe('invalid');
    net.close();
  });

  it('tcpOffloadWhole refuses what it cannot take whole (those are normalized as before)', () => {
    const f = withVnetHdr(superFrame(L2A));
    expect(tcpOffloadWhole(f)).not.toBeNull();
    const noCsum = Buffer.from(f);
    noCsum[0] = 0;
    expect(tcpOffloadWhole(noCsum)).toBeNull();
    const wrongStart = Buffer.from(f);
    wrongStart.writeUInt16LE(30, 6);
    expect(tcpOffloadWhole(wrongStart)).toBeNull();
    const v6type = Buffer.from(f);
    v6type[1] = VIRTIO_NET_HDR_GSO_TCPV6;
    expect(tcpOffloadWhole(v6type)).toBeNull();
    const noSize = Buffer.from(f);
    noSize.writeUInt16LE(0, 4);
    expect(tcpOffloadWhole(noSize)).toBeNull();
  });
});
