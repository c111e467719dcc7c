import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeEthernet,
  ethDst,
  ethHeaderLen,
  ethInnerType,
  ethSrc,
  ethType,
  ethVlanId,
  parseEthernet,
  setEthDst,
  setEthSrc,
  type EthernetHeader,
} from '../../daemon/wire/ethernet.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';
import type { Parsed } from '../../daemon/wire/result.js';

function typed(r: Parsed<unknown>): void {
  if (!r.ok) {
    expect(r.error.protocol).toBe('ethernet');
    expect(typeof r.error.reason).toBe('string');
  }
}

const mac = fc.integer({ min: 0, max: MAC_BROADCAST });
const header: fc.Arbitrary<EthernetHeader> = fc.record({
  dst: mac,
  src: mac,
  vlan: fc.option(fc.record({ pcp: fc.nat(7), dei: fc.boolean(), vid: fc.nat(4095) }), { nil: undefined }),
  etherType: fc.nat(0xffff).filter((t) => t !== 0x8100),
});

describe('ethernet', () => {
  it('parses a known tagged frame', () => {
    const f = Buffer.from('ffffffffffff525400123456810060640806' + '0001', 'hex');
    const r = parseEthernet(f);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value).toMatchObject({ dst: MAC_BROADCAST, src: 0x5254_0012_3456, etherType: 0x0806, headerLength: 18 });
    expect(r.value.vlan).toEqual({ pcp: 3, dei: false, vid: 100 });
    expect(r.value.payload).toEqual(Buffer.from([0, 1]));
    expect(r.value.payload.buffer).toBe(f.buffer); // a view, not a copy
    expect(ethType(f)).toBe(0x8100);
    expect(ethInnerType(f)).toBe(0x0806);
    expect(ethHeaderLen(f)).toBe(18);
    expect(ethVlanId(f)).toBe(100);
  });

  it('emit then parse gives the same value', () => {
    fc.assert(
      fc.property(header, fc.uint8Array({ maxLength: 100 }), (h, payload) => {
        const f = encodeEthernet({ ...h, payload });
        const r = parseEthernet(f);
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        const { headerLength, payload: p, ...rest } = r.value;
        expect(rest).toEqual(h.vlan ? h : { dst: h.dst, src: h.src, etherType: h.etherType });
        expect(headerLength).toBe(h.vlan ? 18 : 14);
        expect(Buffer.from(p)).toEqual(Buffer.from(payload));
        expect(ethDst(f)).toBe(h.dst);
        expect(ethSrc(f)).toBe(h.src);
        expect(ethInnerType(f)).toBe(h.etherType);
        expect(ethVlanId(f)).toBe(h.vlan ? h.vlan.vid : -1);
      }),
    );
  });

  it('setters rewrite addresses in place', () => {
    const f = encodeEthernet({ dst: 1, src: 2, etherType: 0x0800, payload: Buffer.alloc(4) });
    setEthDst(f, 0x0a0b_0c0d_0e0f);
    setEthSrc(f, 0x0102_0304_0506);
    expect(ethDst(f)).toBe(0x0a0b_0c0d_0e0f);
    expect(ethSrc(f)).toBe(0x0102_0304_0506);
  });

  it('random bytes and every truncation give a value or a typed error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => typed(parseEthernet(Buffer.from(bytes)))),
    );
    fc.assert(
      fc.property(header, fc.uint8Array({ maxLength: 20 }), (h, payload) => {
        const f = encodeEthernet({ ...h, payload });
        for (let n = 0; n <= f.length; n++) {
          const r = parseEthernet(f.subarray(0, n));
          typed(r);
          expect(r.ok).toBe(n >= (h.vlan ? 18 : 14));
        }
      }),
    );
  });
});
