/**
 * The addon's onesSum (csum.cc) against the JavaScript sum it replaces for long ranges: the same
 * value for every length, start alignment and odd end, typed-array views at any byte offset
 * included; bad bounds throw; after loadNative() onesSum sends long ranges to it and short ones
 * not; and the JS path still answers when it is taken out again.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { jsOnesSum, NATIVE_SUM_MIN, onesSum, useNativeOnesSum } from '../../daemon/wire/checksum.js';
import { loadNative } from '../../plugins/native/index.js';
import { mulberry32 } from '../support/mulberry32.js';

const addon = loadNative();

afterAll(() => useNativeOnesSum(addon.onesSum));

describe('native onesSum (csum.cc)', () => {
  it('equals the JavaScript sum for any range, alignment and odd length', () => {
    const rnd = mulberry32(13);
    const backing = Buffer.alloc(70_000 + 16);
    for (let i = 0; i < backing.length; i++) backing[i] = Math.floor(rnd() * 256);
    for (let n = 0; n < 600; n++) {
      // A view at an odd byte offset too: the addon must not assume alignment.
      const shift = Math.floor(rnd() * 8);
      const buf = backing.subarray(shift, shift + 70_000);
      const start = Math.floor(rnd() * 4000);
      const len = n < 200 ? n : Math.floor(rnd() * (buf.length - start));
      const end = start + len;
      const js = len >= 64 ? jsOnesSum(buf, start, end) : onesSumSmall(buf, start, end);
      expect(addon.onesSum(buf, start, end), `start ${start} len ${len} shift ${shift}`).toBe(js);
    }
    // All ones: the folded sum stays 0xffff (never 0) however long.
    expect(addon.onesSum(Buffer.alloc(65_536, 0xff), 0, 65_536)).toBe(0xffff);
    expect(addon.onesSum(Buffer.alloc(10), 0, 0)).toBe(0);
  });

  it('refuses bounds outside the buffer and non-byte arrays', () => {
    const b = Buffer.alloc(8);
    expect(() => addon.onesSum(b, 0, 9)).toThrow(TypeError);
    expect(() => addon.onesSum(b, 5, 4)).toThrow(TypeError);
    expect(() => addon.onesSum(b, -1, 4)).toThrow(TypeError);
    expect(() => addon.onesSum(b, 0.5, 4)).toThrow(TypeError);
    expect(() => addon.onesSum(new Uint16Array(4) as unknown as Uint8Array, 0, 2)).toThrow(TypeError);
  });

  it('onesSum uses it for ranges of NATIVE_SUM_MIN bytes and more once the addon is loaded', () => {
    const calls: number[] = [];
    const b = Buffer.alloc(4096, 0x5a);
    useNativeOnesSum((buf, s, e) => {
      calls.push(e - s);
      return addon.onesSum(buf, s, e);
    });
    const long = onesSum(b, 1, 1 + NATIVE_SUM_MIN, 0x1234);
    onesSum(b, 0, NATIVE_SUM_MIN - 1);
    expect(calls).toEqual([NATIVE_SUM_MIN]);
    useNativeOnesSum(null);
    expect(onesSum(b, 1, 1 + NATIVE_SUM_MIN, 0x1234)).toBe(long);
  });
});

/** Byte pairs, the definition. */
function onesSumSmall(buf: Uint8Array, start: number, end: number): number {
  let s = 0;
  for (let i = start; i < end; i += 2) s += (buf[i]! << 8) | (i + 1 < end ? buf[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
