import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_GSO_SEGMENTS, MIN_GSO_SIZE, normalizeOffload } from '../../daemon/wire/gso.js';
import {
  emitVnetHdr,
  parseVnetHdr,
  prependVnetHdr,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VNET_HDR_LEN,
  type VirtioNetHdr,
} from '../../daemon/wire/vnet.js';
import { Ipv4Reassembler } from '../../daemon/wire/ipv4-reassembly.js';
import { parseIpv4 } from '../../daemon/wire/ipv4.js';

// ---- Independent, deliberately naive checksum arithmetic --------------------------------------

function naiveSum(...parts: Uint8Array[]): number {
  let s = 0;
  for (const p of parts) {
    // each part is summed as if it started on an even boundary (callers keep parts even-length except the last)
    for (let i = 0; i < p.length; i += 2) s += p[i]! * 256 + (i + 1 < p.length ? p[i + 1]! : 0);
  }
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 65536);
  return s;
}

function ipv4HeaderOk(ip: Buffer): boolean {
  return naiveSum(ip.subarray(0, (ip[0]! & 15) * 4)) === 0xffff;
}

function l4OkV4(ip: Buffer, proto: number, seg: Buffer): boolean {
  const ph = Buffer.alloc(12);
  ip.copy(ph, 0, 12, 20);
  ph[9] = proto;
  ph.writeUInt16BE(seg.length, 10);
  return naiveSum(ph, seg) === 0xffff;
}

function l4OkV6(ip: Buffer, proto: number, seg: Buffer): boolean {
  const ph = Buffer.alloc(40);
  ip.copy(ph, 0, 8, 40);
  ph.writeUInt32BE(seg.length, 32);
  ph[39] = proto;
  return naiveSum(ph, seg) === 0xffff;
}

/** The partial checksum Linux leaves in the field with CHECKSUM_PARTIAL: the folded pseudo-header sum, not complemented. */
function pseudoV4(ip: Buffer, proto: number, len: number): number {
  const ph = Buffer.alloc(12);
  ip.copy(ph, 0, 12, 20);
  ph[9] = proto;
  ph.writeUInt16BE(len, 10);
  return naiveSum(ph);
}

function pseudoV6(ip: Buffer, proto: number, len: number): number {
  const ph = Buffer.alloc(40);
  ip.copy(ph, 0, 8, 40);
  ph.writeUInt32BE(len, 32);
  ph[39] = proto;
  return naiveSum(ph);
}

// ---- Frame builders ----------------------------------------------------------------------------

function eth(type: number, vlan: boolean): Buffer {
  const h = Buffer.alloc(vlan ? 18 : 14);
  Buffer.from('525400000002525400000001', 'hex').copy(h, 0);
  if (vlan) {
    h.writeUInt16BE(0x8100, 12);
    h.writeUInt16BE(42, 14);
    h.writeUInt16BE(type, 16);
  } else {
    h.writeUInt16BE(type, 12);
  }
  return h;
}

function ipv4(proto: number, l4Len: number, id: number, options = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(20 + options.length);
  h[0] = 0x40 | ((20 + options.length) / 4);
  h.writeUInt16BE(h.length + l4Len, 2);
  h.writeUInt16BE(id, 4);
  h.writeUInt16BE(0x4000, 6); // DF
  h[8] = 64;
  h[9] = proto;
  h.writeUInt32BE(0x0a000002, 12);
  h.writeUInt32BE(0x0a000001, 16);
  options.copy(h, 20);
  return h;
}

function ipv6(nextHeader: number, payloadLen: number): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32BE(0x6000_0000 | 0x12345, 0);
  h.writeUInt16BE(payloadLen, 4);
  h[6] = nextHeader;
  h[7] = 64;
  Buffer.from('fd000000000000000000000000000002', 'hex').copy(h, 8);
  Buffer.from('fd000000000000000000000000000001', 'hex').copy(h, 24);
  return h;
}

const SEQ0 = 0xffff_f000; // wraps during the super-frame

function tcp(flags: number): Buffer {
  const h = Buffer.alloc(32);
  h.writeUInt16BE(40000, 0);
  h.writeUInt16BE(5201, 2);
  h.writeUInt32BE(SEQ0, 4);
  h.writeUInt32BE(0x1234_5678, 8);
  h[12] = 8 << 4;
  h[13] = flags;
  h.writeUInt16BE(502, 14);
  Buffer.from('0101080a000186a000000457', 'hex').copy(h, 20); // NOP NOP TS
  return h;
}

function payloadOf(n: number): Buffer {
  const p = Buffer.alloc(n);
  for (let i = 0; i < n; i++) p[i] = (i * 31 + (i >>> 8)) & 0xff;
  return p;
}

const FIN = 0x01;
const PSH = 0x08;
const ACK = 0x10;
const CWR = 0x80;

interface Super {
  readonly input: Buffer;
  readonly payload: Buffer;
  readonly ipOff: number;
  readonly l4Off: number;
  readonly hdrs: number;
}

function tsoV4(payloadLen: number, gsoSize: number, vlan: boolean, options = Buffer.alloc(0)): Super {
  const payload = payloadOf(payloadLen);
  const t = tcp(ACK | PSH | FIN | CWR);
  const ip = ipv4(6, t.length + payload.length, 1000, options);
  const e = eth(0x0800, vlan);
  t.writeUInt16BE(pseudoV4(ip, 6, t.length + payload.length), 16);
  const frame = Buffer.concat([e, ip, t, payload]);
  const hdr: VirtioNetHdr = { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: e.length + ip.length + t.length, gsoSize, csumStart: e.length + ip.length, csumOffset: 16 };
  return { input: prependVnetHdr(frame, hdr), payload, ipOff: e.length, l4Off: e.length + ip.length, hdrs: e.length + ip.length + t.length };
}

function tsoV6(payloadLen: number, gsoSize: number, vlan: boolean, destOpts: boolean): Super {
  const payload = payloadOf(payloadLen);
  const t = tcp(ACK | PSH | FIN | CWR);
  const ext = destOpts ? Buffer.from('0600010400000000', 'hex') : Buffer.alloc(0); // NH=TCP, len 0, PadN
  const ip = ipv6(destOpts ? 60 : 6, ext.length + t.length + payload.length);
  const e = eth(0x86dd, vlan);
  t.writeUInt16BE(pseudoV6(ip, 6, t.length + payload.length), 16);
  const frame = Buffer.concat([e, ip, ext, t, payload]);
  const l4 = e.length + ip.length + ext.length;
  const hdr: VirtioNetHdr = { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN, hdrLen: l4 + t.length, gsoSize, csumStart: l4, csumOffset: 16 };
  return { input: prependVnetHdr(frame, hdr), payload, ipOff: e.length, l4Off: l4, hdrs: l4 + t.length };
}

function checkSegments(s: Super, segs: Buffer[], gsoSize: number, v6: boolean): void {
  const n = Math.max(1, Math.ceil(s.payload.length / gsoSize));
  expect(segs.length).toBe(n);
  const got: Buffer[] = [];
  segs.forEach((seg, i) => {
    const segLen = Math.min(gsoSize, s.payload.length - i * gsoSize);
    expect(seg.length).toBe(s.hdrs + segLen);
    // Ethernet header and everything up to the changed fields is copied verbatim.
    expect(seg.subarray(0, s.ipOff)).toEqual(s.input.subarray(VNET_HDR_LEN, VNET_HDR_LEN + s.ipOff));
    const ip = seg.subarray(s.ipOff);
    const l4 = seg.subarray(s.l4Off);
    if (v6) {
      expect(ip.readUInt16BE(4)).toBe(seg.length - s.ipOff - 40);
      expect(l4OkV6(ip, 6, l4)).toBe(true);
    } else {
      expect(ipv4HeaderOk(ip)).toBe(true);
      expect(ip.readUInt16BE(2)).toBe(seg.length - s.ipOff);
      expect(ip.readUInt16BE(4)).toBe(1000 + i);
      expect(ip.readUInt16BE(6)).toBe(0x4000);
      expect(l4OkV4(ip, 6, l4)).toBe(true);
    }
    expect(l4.readUInt32BE(4)).toBe((SEQ0 + i * gsoSize) % 2 ** 32);
    const flags = l4[13]!;
    expect((flags & (FIN | PSH)) !== 0).toBe(i === n - 1);
    expect((flags & FIN) !== 0).toBe(i === n - 1);
    expect((flags & CWR) !== 0).toBe(i === 0);
    expect(flags & ACK).toBe(ACK);
    expect(l4.subarray(20, 32).toString('hex')).toBe('0101080a000186a000000457');
    got.push(seg.subarray(s.hdrs));
  });
  expect(Buffer.concat(got)).toEqual(s.payload);
}

describe('virtio-net header', () => {
  it('parses and emits little-endian fields', () => {
    const h: VirtioNetHdr = { flags: 1, gsoType: 0x81, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16 };
    const b = Buffer.alloc(10);
    expect(emitVnetHdr(h, b)).toBe(10);
    expect(b.toString('hex')).toBe('01814200a8052200' + '1000');
    expect(parseVnetHdr(b)).toEqual({ ok: true, value: h });
    expect(parseVnetHdr(b.subarray(0, 9))).toMatchObject({ ok: false, error: { protocol: 'vnet', reason: 'truncated' } });
    const framed = prependVnetHdr(Buffer.from([1, 2, 3]));
    expect(framed.toString('hex')).toBe('00'.repeat(10) + '010203');
  });
});

describe('normalizeOffload', () => {
  it('passes a frame without offload through as a view', () => {
    const input = prependVnetHdr(Buffer.concat([eth(0x0800, false), Buffer.alloc(46, 7)]));
    const out: Buffer[] = [];
    expect(normalizeOffload(input, out)).toBe(1);
    expect(out[0]!.buffer).toBe(input.buffer);
    expect(out[0]!.byteOffset).toBe(input.byteOffset + VNET_HDR_LEN);
    expect(out[0]!.length).toBe(60);
  });

  it('segments a 30000-byte IPv4 TSO super-frame at 1448', () => {
    for (const vlan of [false, true]) {
      const s = tsoV4(30000, 1448, vlan);
      const before = Buffer.from(s.input);
      const out: Buffer[] = [];
      expect(normalizeOffload(s.input, out)).toBe(21);
      expect(s.input).toEqual(before);
      checkSegments(s, out, 1448, false);
      // and each segment is a well-formed IPv4 packet
      for (const seg of out) expect(parseIpv4(seg.subarray(s.ipOff)).ok).toBe(true);
    }
  });

  it('copies IPv4 options into every segment', () => {
    const s = tsoV4(5000, 1000, false, Buffer.from([0x94, 0x04, 0x00, 0x00]));
    const out: Buffer[] = [];
    expect(normalizeOffload(s.input, out)).toBe(5);
    checkSegments(s, out, 1000, false);
  });

  it('segments a 30000-byte IPv6 TSO super-frame at 1448 (with VLAN and a destination options header)', () => {
    for (const [vlan, destOpts] of [
      [false, false],
      [true, true],
    ] as const) {
      const s = tsoV6(30000, 1448, vlan, destOpts);
      const out: Buffer[] = [];
      expect(normalizeOffload(s.input, out)).toBe(21);
      checkSegments(s, out, 1448, true);
    }
  });

  it('segments correctly for any payload length and gso_size', () => {
    fc.assert(
      fc.property(fc.nat(9000), fc.oneof(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 64, max: 9000 })), fc.boolean(), fc.boolean(), (len, size, v6, vlan) => {
        fc.pre(Math.ceil(len / size) <= (size < 64 ? 64 : MAX_GSO_SEGMENTS));
        const s = v6 ? tsoV6(len, size, vlan, false) : tsoV4(len, size, vlan);
        const out: Buffer[] = [];
        const n = normalizeOffload(s.input, out);
        if (size < MIN_GSO_SIZE) {
          // Under Linux's TCP_MIN_MSS: refused (review-14b B).
          expect(n).toBe(-1);
          expect(out).toHaveLength(0);
          return;
        }
        expect(n).toBe(out.length);
        checkSegments(s, out, size, v6);
      }),
      { numRuns: 60 },
    );
  });

  it('completes a partial UDP checksum (NEEDS_CSUM)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1500 }), fc.boolean(), (data, v6) => {
        const udp = Buffer.alloc(8 + data.length);
        udp.writeUInt16BE(5353, 0);
        udp.writeUInt16BE(53, 2);
        udp.writeUInt16BE(udp.length, 4);
        udp.set(data, 8);
        const ip = v6 ? ipv6(17, udp.length) : ipv4(17, udp.length, 7);
        udp.writeUInt16BE(v6 ? pseudoV6(ip, 17, udp.length) : pseudoV4(ip, 17, udp.length), 6);
        const e = eth(v6 ? 0x86dd : 0x0800, false);
        const frame = Buffer.concat([e, ip, udp]);
        const input = prependVnetHdr(frame, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: e.length + ip.length, csumOffset: 6 });
        const before = Buffer.from(input);
        const out: Buffer[] = [];
        expect(normalizeOffload(input, out)).toBe(1);
        expect(input).toEqual(before); // the input may be queued for other ports: never patched in place
        const seg = out[0]!.subarray(e.length + ip.length);
        expect(seg.readUInt16BE(6)).not.toBe(0);
        expect(v6 ? l4OkV6(ip, 17, seg) : l4OkV4(ip, 17, seg)).toBe(true);
      }),
    );
  });

  it('completes a partial TCP checksum (NEEDS_CSUM)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1448 }), fc.boolean(), (data, v6) => {
        const t = tcp(ACK);
        const seg0 = Buffer.concat([t, data]);
        const ip = v6 ? ipv6(6, seg0.length) : ipv4(6, seg0.length, 9);
        seg0.writeUInt16BE(v6 ? pseudoV6(ip, 6, seg0.length) : pseudoV4(ip, 6, seg0.length), 16);
        const e = eth(v6 ? 0x86dd : 0x0800, true);
        const input = prependVnetHdr(Buffer.concat([e, ip, seg0]), { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: e.length + ip.length, csumOffset: 16 });
        const out: Buffer[] = [];
        expect(normalizeOffload(input, out)).toBe(1);
        const seg = out[0]!.subarray(e.length + ip.length);
        expect(v6 ? l4OkV6(ip, 6, seg) : l4OkV4(ip, 6, seg)).toBe(true);
      }),
    );
  });

  it('fragments an IPv4 UFO datagram and the fragments reassemble with a valid UDP checksum', () => {
    const data = payloadOf(5000);
    const udp = Buffer.alloc(8 + data.length);
    udp.writeUInt16BE(40000, 0);
    udp.writeUInt16BE(9999, 2);
    udp.writeUInt16BE(udp.length, 4);
    data.copy(udp, 8);
    const ip = ipv4(17, udp.length, 4242);
    udp.writeUInt16BE(pseudoV4(ip, 17, udp.length), 6);
    const e = eth(0x0800, false);
    const input = prependVnetHdr(Buffer.concat([e, ip, udp]), { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_UDP, hdrLen: 42, gsoSize: 1480, csumStart: 34, csumOffset: 6 });
    const before = Buffer.from(input);
    const out: Buffer[] = [];
    expect(normalizeOffload(input, out)).toBe(4);
    expect(input).toEqual(before);
    const r = new Ipv4Reassembler();
    let whole: Buffer | undefined;
    out.forEach((f, i) => {
      const p = f.subarray(14);
      expect(ipv4HeaderOk(p)).toBe(true);
      expect(p.length).toBeLessThanOrEqual(1500);
      const parsed = parseIpv4(p);
      expect(parsed.ok).toBe(true);
      if (!parsed.ok) return;
      expect(parsed.value).toMatchObject({ id: 4242, moreFragments: i < 3, fragmentOffset: i * 1480, dontFragment: false });
      const res = r.push(parsed.value, 0);
      if (res.status === 'complete') whole = res.packet;
    });
    expect(whole).toBeDefined();
    const seg = whole!.subarray(20);
    expect(seg.subarray(8)).toEqual(data);
    expect(l4OkV4(whole!, 17, seg)).toBe(true);
  });

  it('sends a UFO datagram that already fits as one frame', () => {
    const udp = Buffer.alloc(108);
    udp.writeUInt16BE(108, 4);
    const ip = ipv4(17, udp.length, 1);
    const input = prependVnetHdr(Buffer.concat([eth(0x0800, false), ip, udp]), { flags: 0, gsoType: VIRTIO_NET_HDR_GSO_UDP, hdrLen: 0, gsoSize: 1480, csumStart: 0, csumOffset: 0 });
    const out: Buffer[] = [];
    expect(normalizeOffload(input, out)).toBe(1);
    expect(ipv4HeaderOk(out[0]!.subarray(14))).toBe(true);
    expect(l4OkV4(out[0]!.subarray(14), 17, out[0]!.subarray(34))).toBe(true);
  });

  it('returns -1 for impossible headers and appends nothing', () => {
    const good = tsoV4(3000, 1448, false);
    const frameLen = good.input.length - VNET_HDR_LEN;
    const cases: [string, (b: Buffer) => Buffer][] = [
      ['too short', (b) => b.subarray(0, 20)],
      ['gso_size 0', (b) => (b.writeUInt16LE(0, 4), b)],
      ['unknown gso type 2', (b) => ((b[1] = 2), b)],
      ['unknown gso type 5', (b) => ((b[1] = 5), b)],
      ['ECN without GSO', (b) => ((b[1] = VIRTIO_NET_HDR_GSO_NONE | VIRTIO_NET_HDR_GSO_ECN), b)],
      ['ECN with UDP', (b) => ((b[1] = VIRTIO_NET_HDR_GSO_UDP | VIRTIO_NET_HDR_GSO_ECN), b)],
      ['csum_start past the end', (b) => (b.writeUInt16LE(frameLen, 6), b)],
      ['csum_offset past the end', (b) => (b.writeUInt16LE(frameLen - 34 - 1, 8), b)],
      ['TCPV6 on an IPv4 frame', (b) => ((b[1] = VIRTIO_NET_HDR_GSO_TCPV6), b)],
      ['UDP GSO on a TCP frame', (b) => ((b[1] = VIRTIO_NET_HDR_GSO_UDP), b)],
      ['not IP', (b) => (b.writeUInt16BE(0x0806, VNET_HDR_LEN + 12), b)],
      ['bad IP version', (b) => ((b[VNET_HDR_LEN + 14] = 0x55), b)],
      ['IHL beyond the frame', (b) => b.subarray(0, VNET_HDR_LEN + 14 + 20 + 10)],
      ['TCP data offset < 5', (b) => ((b[VNET_HDR_LEN + 34 + 12] = 0x40), b)],
      ['already a fragment', (b) => (b.writeUInt16BE(0x2000, VNET_HDR_LEN + 14 + 6), b)],
      ['too many segments', (b) => (b.writeUInt16LE(1, 4), b)],
    ];
    for (const [what, mutate] of cases) {
      const out: Buffer[] = [];
      expect(normalizeOffload(mutate(Buffer.from(good.input)), out), what).toBe(-1);
      expect(out, what).toEqual([]);
    }
    expect(normalizeOffload(tsoV6(3000, 1448, false, false).input.subarray(0, VNET_HDR_LEN + 14 + 30), [])).toBe(-1);
    // UFO over IPv6 is not supported.
    const v6udp = prependVnetHdr(Buffer.concat([eth(0x86dd, false), ipv6(17, 3008), Buffer.alloc(3008)]), { flags: 0, gsoType: VIRTIO_NET_HDR_GSO_UDP, hdrLen: 0, gsoSize: 1400, csumStart: 0, csumOffset: 0 });
    expect(normalizeOffload(v6udp, [])).toBe(-1);
  });

  it('never throws on arbitrary headers and frames', () => {
    fc.assert(
      fc.property(
        fc.record({
          flags: fc.nat(3),
          gsoType: fc.constantFrom(0, 1, 3, 4, 0x81, 0x84, 2, 5, 255),
          hdrLen: fc.nat(0xffff),
          gsoSize: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 2000 }), fc.nat(0xffff)),
          csumStart: fc.nat(200),
          csumOffset: fc.nat(40),
        }),
        fc.boolean(),
        fc.uint8Array({ maxLength: 300 }),
        (h, asIp, bytes) => {
          const body = Buffer.from(bytes);
          const frame = asIp
            ? Buffer.concat([eth(h.gsoType === 4 || h.gsoType === 0x84 ? 0x86dd : 0x0800, false), body])
            : body;
          if (asIp && body.length > 0) body[0] = (h.gsoType & 0x7f) === 4 ? 0x60 | (body[0]! & 15) : 0x40 | (body[0]! & 15);
          const out: Buffer[] = [];
          const n = normalizeOffload(prependVnetHdr(frame, h), out);
          expect(n === -1 ? 0 : n).toBe(out.length);
          expect(n === -1 || n >= 1).toBe(true);
        },
      ),
      { numRuns: 3000 },
    );
  });
});
