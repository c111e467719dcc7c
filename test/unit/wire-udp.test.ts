import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { IpPseudo } from '../../daemon/wire/checksum.js';
import { emitUdpHeader, encodeUdp, finishUdpChecksum, parseUdp, udpDstPort, udpSrcPort } from '../../daemon/wire/udp.js';

const addr6 = fc.uint8Array({ minLength: 16, maxLength: 16 });
const pseudo: fc.Arbitrary<IpPseudo> = fc.oneof(
  fc.record({ version: fc.constant(4 as const), src: fc.nat(0xffffffff), dst: fc.nat(0xffffffff) }),
  fc.record({ version: fc.constant(6 as const), src: addr6, dst: addr6 }),
);
const datagram = fc.record({ srcPort: fc.nat(0xffff), dstPort: fc.nat(0xffff), payload: fc.uint8Array({ maxLength: 200 }) });

function refChecksumOk(seg: Buffer, p: IpPseudo): boolean {
  const ph =
    p.version === 4
      ? Buffer.from([p.src >>> 24, (p.src >>> 16) & 255, (p.src >>> 8) & 255, p.src & 255, p.dst >>> 24, (p.dst >>> 16) & 255, (p.dst >>> 8) & 255, p.dst & 255, 0, 17, seg.length >>> 8, seg.length & 255])
      : Buffer.concat([Buffer.from(p.src), Buffer.from(p.dst), Buffer.from([0, 0, seg.length >>> 8, seg.length & 255, 0, 0, 0, 17])]);
  const all = Buffer.concat([ph, seg, Buffer.alloc(seg.length & 1)]);
  let s = 0;
  for (let i = 0; i < all.length; i += 2) s += all.readUInt16BE(i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff;
}

describe('udp', () => {
  it('builds and parses a DNS query datagram, checksum verified independently', () => {
    // 10.0.2.15:41000 -> 10.0.2.3:53, 29-byte query for example.com A
    const q = Buffer.from('abcd01000001000000000000076578616d706c6503636f6d0000010001', 'hex');
    const p: IpPseudo = { version: 4, src: 0x0a00020f, dst: 0x0a000203 };
    const d = encodeUdp({ srcPort: 41000, dstPort: 53, payload: q }, p);
    expect(d.subarray(0, 6).toString('hex')).toBe('a0280035' + (8 + q.length).toString(16).padStart(4, '0'));
    expect(refChecksumOk(d, p)).toBe(true);
    const r = parseUdp(d, p);
    expect(r).toMatchObject({ ok: true, value: { srcPort: 41000, dstPort: 53, length: 37 } });
    expect(udpSrcPort(d)).toBe(41000);
    expect(udpDstPort(d)).toBe(53);
  });

  it('emit then parse gives the same value and the checksum verifies independently', () => {
    fc.assert(
      fc.property(datagram, pseudo, (d, p) => {
        const b = encodeUdp(d, p);
        expect(refChecksumOk(b, p)).toBe(true);
        expect(b.readUInt16BE(6)).not.toBe(0);
        const r = parseUdp(b, p);
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        expect({ srcPort: r.value.srcPort, dstPort: r.value.dstPort, payload: new Uint8Array(r.value.payload) }).toEqual(d);
        expect(r.value.length).toBe(b.length);
      }),
    );
  });

  it('zero checksum: fine over IPv4, an error over IPv6', () => {
    const b = encodeUdp({ srcPort: 1, dstPort: 2, payload: Buffer.from('x') });
    expect(b.readUInt16BE(6)).toBe(0);
    expect(parseUdp(b, { version: 4, src: 1, dst: 2 }).ok).toBe(true);
    expect(parseUdp(b, { version: 6, src: Buffer.alloc(16), dst: Buffer.alloc(16) })).toMatchObject({ ok: false, error: { protocol: 'udp', reason: 'bad-checksum' } });
  });

  it('emitUdpHeader + finishUdpChecksum in a caller buffer; trailing bytes after the length are ignored', () => {
    const p: IpPseudo = { version: 4, src: 0x7f000001, dst: 0x7f000001 };
    const buf = Buffer.alloc(64, 0xee);
    const hl = emitUdpHeader(5353, 5353, 5, buf, 4);
    buf.write('hello', 4 + hl);
    finishUdpChecksum(buf, 4, 13, p);
    const r = parseUdp(buf.subarray(4), p);
    expect(r.ok && r.value.payload.toString()).toBe('hello');
  });

  it('random bytes and every truncation give a typed error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), pseudo, (bytes, p) => {
        for (const r of [parseUdp(Buffer.from(bytes)), parseUdp(Buffer.from(bytes), p)]) {
          if (!r.ok) expect(['truncated', 'bad-length', 'bad-checksum']).toContain(r.error.reason);
        }
      }),
    );
    fc.assert(
      fc.property(datagram, pseudo, (d, p) => {
        const b = encodeUdp(d, p);
        for (let n = 0; n < b.length; n++) expect(parseUdp(b.subarray(0, n))).toMatchObject({ ok: false, error: { protocol: 'udp', reason: 'truncated' } });
      }),
    );
  });
});
