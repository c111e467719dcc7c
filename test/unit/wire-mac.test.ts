import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  isBroadcastMac,
  isLocalMac,
  isMac,
  isMacString,
  isMulticastMac,
  isUnicastMac,
  MAC_BROADCAST,
  macToBuffer,
  macToString,
  parseMacString,
  readMac,
  writeMac,
} from '../../daemon/wire/mac.js';

const mac = fc.integer({ min: 0, max: MAC_BROADCAST });

describe('mac', () => {
  it('formats and parses known addresses', () => {
    expect(macToString(0x0200_0000_0001)).toBe('02:00:00:00:00:01');
    expect(macToString(MAC_BROADCAST)).toBe('ff:ff:ff:ff:ff:ff');
    expect(parseMacString('AA:bb:CC:dd:EE:0f')).toEqual({ ok: true, value: 0xaabb_ccdd_ee0f });
    expect(parseMacString('aa-bb-cc-dd-ee-ff')).toEqual({ ok: true, value: 0xaabb_ccdd_eeff });
    expect(macToBuffer(0x0102_0304_0506)).toEqual(Buffer.from([1, 2, 3, 4, 5, 6]));
  });

  it('rejects malformed text with a typed error', () => {
    for (const bad of ['', 'aa:bb:cc:dd:ee', 'aa:bb:cc:dd:ee:fg', 'aa:bb-cc:dd:ee:ff', 'aabb.ccdd.eeff', ' aa:bb:cc:dd:ee:ff', 'aa:bb:cc:dd:ee:ff:00', 'a:bb:cc:dd:ee:fff']) {
      const r = parseMacString(bad);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error.protocol).toBe('mac');
      expect(isMacString(bad)).toBe(false);
    }
  });

  it('string and buffer forms round-trip', () => {
    fc.assert(
      fc.property(mac, fc.nat(10), (m, off) => {
        expect(parseMacString(macToString(m))).toEqual({ ok: true, value: m });
        const b = Buffer.alloc(off + 6);
        writeMac(b, off, m);
        expect(readMac(b, off)).toBe(m);
        expect(isMac(m)).toBe(true);
      }),
    );
  });

  it('never throws on arbitrary text', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (s) => {
        const r = parseMacString(s);
        if (r.ok) expect(macToString(r.value)).toBe(s.toLowerCase().replace(/-/g, ':'));
      }),
    );
  });

  it('classifies group, broadcast and local bits', () => {
    expect(isMulticastMac(0x0100_5e00_0001)).toBe(true);
    expect(isMulticastMac(0x3333_0000_0001)).toBe(true);
    expect(isMulticastMac(0x0200_0000_0001)).toBe(false);
    expect(isBroadcastMac(MAC_BROADCAST)).toBe(true);
    expect(isUnicastMac(0)).toBe(false);
    expect(isUnicastMac(0x5254_0012_3456)).toBe(true);
    expect(isLocalMac(0x0200_0000_0001)).toBe(true);
    expect(isLocalMac(0x5054_0012_3456)).toBe(false);
    expect(isMac(-1)).toBe(false);
    expect(isMac(2 ** 48)).toBe(false);
    expect(isMac(1.5)).toBe(false);
  });
});
