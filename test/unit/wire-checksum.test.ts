import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  addSums,
  adjustChecksum,
  adjustChecksum32,
  finishChecksum,
  foldSum,
  internetChecksum,
  onesSum,
  pseudoHeaderSum,
  pseudoHeaderSumV4,
  pseudoHeaderSumV4At,
  pseudoHeaderSumV6,
  pseudoHeaderSumV6At,
  verifyChecksum,
} from '../../daemon/wire/checksum.js';

/** The textbook definition, byte pair by byte pair. */
function refSum(b: Uint8Array, start = 0, end = b.length, initial = 0): number {
  let s = initial;
  for (let i = start; i < end; i += 2) s += (b[i]! << 8) | (i + 1 < end ? b[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 65536);
  return s;
}

describe('internet checksum', () => {
  it('matches the RFC 1071 §3 example', () => {
    const b = Buffer.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
    expect(onesSum(b)).toBe(0xddf2);
    expect(internetChecksum(b)).toBe(0x220d);
  });

  it('matches a well-known IPv4 header checksum', () => {
    const h = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
    expect(internetChecksum(h)).toBe(0xb861);
    h.writeUInt16BE(0xb861, 10);
    expect(verifyChecksum(h)).toBe(true);
    h[8] = 0x3f;
    expect(verifyChecksum(h)).toBe(false);
  });

  it('handles empty, odd and clamped ranges', () => {
    expect(onesSum(Buffer.alloc(0))).toBe(0);
    expect(onesSum(Buffer.from([0xab]))).toBe(0xab00);
    expect(onesSum(Buffer.from([1, 2, 3]), -5, 99)).toBe(0x0102 + 0x0300);
    expect(onesSum(Buffer.from([1, 2, 3]), 2, 1, 7)).toBe(7);
    expect(finishChecksum(0xffff)).toBe(0);
    expect(foldSum(0x1_0000_0000 * 3 + 5)).toBe(refSum(Buffer.alloc(0), 0, 0, 0x1_0000_0000 * 3 + 5));
  });

  it('equals the reference at every alignment, offset and length (fast path included)', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 3000 }),
        fc.nat(7),
        fc.nat(),
        fc.nat(),
        fc.nat(0xffff),
        (data, shift, a, b, initial) => {
          // Shift the data inside a bigger ArrayBuffer so byteOffset takes every value mod 4.
          const backing = Buffer.alloc(data.length + 16);
          const view = backing.subarray(shift, shift + data.length);
          view.set(data);
          const start = data.length ? a % (data.length + 1) : 0;
          const end = start + (data.length - start ? b % (data.length - start + 1) : 0);
          expect(onesSum(view, start, end, initial)).toBe(refSum(view, start, end, initial));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('works on a pooled Buffer and on a large standalone one', () => {
    const pooled = Buffer.from('a slice of the shared pool, long enough to take the fast path ............');
    expect(onesSum(pooled, 1)).toBe(refSum(pooled, 1));
    const big = Buffer.alloc(65536 + 3);
    for (let i = 0; i < big.length; i++) big[i] = (i * 131 + 7) & 0xff;
    expect(onesSum(big, 3)).toBe(refSum(big, 3));
    expect(onesSum(big, 0, 65535)).toBe(refSum(big, 0, 65535));
  });

  it('a buffer with its checksum appended verifies', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (data) => {
        const even = data.length & ~1;
        const b = Buffer.alloc(even + 2);
        b.set(data.subarray(0, even));
        b.writeUInt16BE(internetChecksum(b, 0, even), even);
        expect(verifyChecksum(b)).toBe(true);
      }),
    );
  });

  it('sums over even splits compose with addSums', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.nat(), (data, m) => {
        const b = Buffer.from(data);
        const mid = (m % (b.length + 1)) & ~1;
        expect(addSums(onesSum(b, 0, mid), onesSum(b, mid))).toBe(onesSum(b));
      }),
    );
  });

  it('incremental updates (RFC 1624) equal recomputation', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 24, maxLength: 200 }), fc.nat(), fc.nat(0xffff), fc.nat(0xffffffff), (data, at, w16, w32) => {
        const b = Buffer.from(data.subarray(0, data.length & ~1));
        const i = (at % ((b.length - 4) / 2)) * 2;
        const c0 = internetChecksum(b);
        const old16 = b.readUInt16BE(i);
        b.writeUInt16BE(w16, i);
        const c1 = adjustChecksum(c0, old16, w16);
        expect(c1 === internetChecksum(b) || (c1 ^ internetChecksum(b)) === 0xffff).toBe(true);
        expect(refSum(b, 0, b.length, c1) === 0xffff || refSum(b, 0, b.length, c1) === 0).toBe(true);
        const old32 = b.readUInt32BE(i);
        b.writeUInt32BE(w32, i);
        const c2 = adjustChecksum32(c1, old32, w32);
        // Both 0x0000 and 0xffff represent zero in one's complement; the packet must verify.
        const s = refSum(b, 0, b.length, c2);
        expect(s === 0xffff || (s === 0 && c2 === 0xffff)).toBe(true);
      }),
    );
  });

  it('pseudo-header sums agree with a byte-built pseudo-header', () => {
    fc.assert(
      fc.property(fc.nat(0xffffffff), fc.nat(0xffffffff), fc.nat(255), fc.nat(0xffff), (src, dst, proto, len) => {
        const ph = Buffer.alloc(12);
        ph.writeUInt32BE(src, 0);
        ph.writeUInt32BE(dst, 4);
        ph[9] = proto;
        ph.writeUInt16BE(len, 10);
        expect(pseudoHeaderSumV4(src, dst, proto, len)).toBe(refSum(ph));
        expect(pseudoHeaderSum({ version: 4, src, dst }, proto, len)).toBe(refSum(ph));
        const ip = Buffer.alloc(20);
        ip.writeUInt32BE(src, 12);
        ip.writeUInt32BE(dst, 16);
        expect(pseudoHeaderSumV4At(ip, 0, proto, len)).toBe(refSum(ph));
      }),
    );
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.nat(255), fc.nat(0xfffff), (src, dst, nh, len) => {
        const ph = Buffer.alloc(40);
        ph.set(src, 0);
        ph.set(dst, 16);
        ph.writeUInt32BE(len, 32);
        ph[39] = nh;
        expect(pseudoHeaderSumV6(src, dst, nh, len)).toBe(refSum(ph));
        expect(pseudoHeaderSum({ version: 6, src, dst }, nh, len)).toBe(refSum(ph));
        const ip = Buffer.alloc(44);
        ip.set(src, 10);
        ip.set(dst, 26);
        expect(pseudoHeaderSumV6At(ip, 2, nh, len)).toBe(refSum(ph));
      }),
    );
  });
});
