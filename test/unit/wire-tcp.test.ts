import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { IpPseudo } from '../../daemon/wire/checksum.js';
import {
  encodeTcp,
  parseTcp,
  tcpAck,
  tcpDstPort,
  tcpFlags,
  tcpHeaderLen,
  tcpOptionsLength,
  tcpSeq,
  tcpSrcPort,
  tcpWindow,
  TCP_ACK,
  TCP_SYN,
  type TcpInit,
  type TcpOptions,
} from '../../daemon/wire/tcp.js';

const addr6 = fc.uint8Array({ minLength: 16, maxLength: 16 });
const pseudo: fc.Arbitrary<IpPseudo> = fc.oneof(
  fc.record({ version: fc.constant(4 as const), src: fc.nat(0xffffffff), dst: fc.nat(0xffffffff) }),
  fc.record({ version: fc.constant(6 as const), src: addr6, dst: addr6 }),
);
const u32 = fc.nat(0xffffffff);
const options: fc.Arbitrary<TcpOptions> = fc.record(
  {
    mss: fc.nat(0xffff),
    windowScale: fc.nat(255),
    sackPermitted: fc.constant(true),
    sack: fc.array(fc.record({ left: u32, right: u32 }), { minLength: 1, maxLength: 4 }),
    timestamp: fc.record({ value: u32, echo: u32 }),
  },
  { requiredKeys: [] },
);
const segment: fc.Arbitrary<TcpInit> = fc.record({
  srcPort: fc.nat(0xffff),
  dstPort: fc.nat(0xffff),
  seq: u32,
  ack: u32,
  flags: fc.nat(0x1ff),
  window: fc.nat(0xffff),
  urgent: fc.nat(0xffff),
  options,
  payload: fc.uint8Array({ maxLength: 100 }),
});

function refChecksumOk(seg: Buffer, p: IpPseudo): boolean {
  const ph =
    p.version === 4
      ? Buffer.from([p.src >>> 24, (p.src >>> 16) & 255, (p.src >>> 8) & 255, p.src & 255, p.dst >>> 24, (p.dst >>> 16) & 255, (p.dst >>> 8) & 255, p.dst & 255, 0, 6, seg.length >>> 8, seg.length & 255])
      : Buffer.concat([Buffer.from(p.src), Buffer.from(p.dst), Buffer.from([0, 0, seg.length >>> 8, seg.length & 255, 0, 0, 0, 6])]);
  const all = Buffer.concat([ph, seg, Buffer.alloc(seg.length & 1)]);
  let s = 0;
  for (let i = 0; i < all.length; i += 2) s += all.readUInt16BE(i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff;
}

describe('tcp', () => {
  it('emits a SYN with the same option layout Linux uses', () => {
    const p: IpPseudo = { version: 4, src: 0x0a00020f, dst: 0x5db8d822 };
    const syn = encodeTcp(
      {
        srcPort: 52814,
        dstPort: 80,
        seq: 0x8a3b_2c1d,
        ack: 0,
        flags: TCP_SYN,
        window: 64240,
        options: { mss: 1460, sackPermitted: true, timestamp: { value: 0x0012_d687, echo: 0 }, windowScale: 7 },
        payload: Buffer.alloc(0),
      },
      p,
    );
    // MSS 1460, SACK_PERM, TS val/ecr, NOP, WS 7 — byte for byte what `tcpdump -X` shows for Linux.
    expect(syn.subarray(20).toString('hex')).toBe('020405b40402080a0012d6870000000001030307');
    expect(syn.subarray(0, 20).toString('hex').replace(/(.{32})(.{4})/, '$1....')).toBe('ce4e00508a3b2c1d00000000a002faf0....0000');
    expect(refChecksumOk(syn, p)).toBe(true);
    const r = parseTcp(syn, p);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.options).toEqual({ mss: 1460, sackPermitted: true, timestamp: { value: 0x0012_d687, echo: 0 }, windowScale: 7 });
    expect(r.value.headerLength).toBe(40);
  });

  it('parses options with unknown kinds, NOPs, EOL and wrong-length known kinds', () => {
    const hdr = Buffer.alloc(40);
    hdr[12] = 10 << 4;
    // NOP, unknown kind 30 len 4, MSS with bad length 3 (skipped), WS 5, EOL, then garbage after EOL
    Buffer.from('011e0400000203050303050000ffffff', 'hex').copy(hdr, 20);
    const r = parseTcp(hdr);
    expect(r.ok && r.value.options).toEqual({ windowScale: 5 });
    const bad = Buffer.from(hdr);
    Buffer.from('0201', 'hex').copy(bad, 20); // MSS with length 1
    expect(parseTcp(bad)).toMatchObject({ ok: false, error: { protocol: 'tcp', reason: 'bad-length' } });
    const over = Buffer.from(hdr);
    Buffer.from('1e30', 'hex').copy(over, 20); // runs past the header
    expect(parseTcp(over)).toMatchObject({ ok: false, error: { protocol: 'tcp', reason: 'truncated' } });
  });

  it('emit then parse gives the same value; checksum verifies independently', () => {
    fc.assert(
      fc.property(segment, pseudo, (s, p) => {
        const b = encodeTcp(s, p);
        expect(refChecksumOk(b, p)).toBe(true);
        const r = parseTcp(b, p);
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        const v = r.value;
        expect([v.srcPort, v.dstPort, v.seq, v.ack, v.flags, v.window, v.urgent]).toEqual([s.srcPort, s.dstPort, s.seq, s.ack, s.flags, s.window, s.urgent]);
        expect(new Uint8Array(v.payload)).toEqual(s.payload);
        expect(v.headerLength).toBe(20 + tcpOptionsLength(s.options));
        expect(v.headerLength).toBeLessThanOrEqual(60);
        const o = s.options ?? {};
        const want: Record<string, unknown> = { ...o };
        if (o.sack) {
          // What fits in 40 option bytes after MSS (4), SACK-permitted/timestamps (4 or 12) and WS (4).
          const fixed = (o.mss !== undefined ? 4 : 0) + (o.timestamp ? 12 : o.sackPermitted ? 4 : 0) + (o.windowScale !== undefined ? 4 : 0);
          const fit = Math.max(0, Math.min(o.sack.length, Math.floor((40 - fixed - 4) / 8)));
          if (fit === 0) delete want.sack;
          else want.sack = o.sack.slice(0, fit);
        }
        expect(v.options).toEqual(want);
        expect([tcpSrcPort(b), tcpDstPort(b), tcpSeq(b), tcpAck(b), tcpHeaderLen(b), tcpFlags(b), tcpWindow(b)]).toEqual([
          s.srcPort,
          s.dstPort,
          s.seq,
          s.ack,
          v.headerLength,
          s.flags,
          s.window,
        ]);
      }),
    );
  });

  it('keeps as many SACK blocks as fit (3 with timestamps, 4 without)', () => {
    const p: IpPseudo = { version: 4, src: 1, dst: 2 };
    const sack = [1, 2, 3, 4].map((i) => ({ left: i * 100, right: i * 100 + 50 }));
    const base = { srcPort: 1, dstPort: 2, seq: 3, ack: 4, flags: TCP_ACK, window: 5, payload: Buffer.alloc(0) };
    const withTs = parseTcp(encodeTcp({ ...base, options: { sack, timestamp: { value: 1, echo: 2 } } }, p));
    expect(withTs.ok && withTs.value.options.sack?.length).toBe(3);
    const without = parseTcp(encodeTcp({ ...base, options: { sack } }, p));
    expect(without.ok && without.value.options.sack).toEqual(sack);
  });

  it('random bytes and every truncation give a typed error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), fc.nat(15), (bytes, doff) => {
        const b = Buffer.from(bytes);
        if (b.length > 12) b[12] = (doff << 4) | (b[12]! & 0x0f);
        const r = parseTcp(b);
        if (!r.ok) expect(['truncated', 'bad-length']).toContain(r.error.reason);
      }),
    );
    fc.assert(
      fc.property(segment, pseudo, (s, p) => {
        const b = encodeTcp(s, p);
        const hl = tcpHeaderLen(b);
        for (let n = 0; n < b.length; n++) {
          const r = parseTcp(b.subarray(0, n));
          expect(r.ok).toBe(n >= hl);
          if (!r.ok) expect(r.error.protocol).toBe('tcp');
          expect(parseTcp(b.subarray(0, n), p).ok).toBe(false);
        }
      }),
    );
    // Every truncation of 100 segments: a few seconds on a loaded 2-core machine.
  }, 30_000);
});
