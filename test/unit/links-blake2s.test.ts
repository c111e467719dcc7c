/** The test-only keyed BLAKE2s (test/support/blake2s.ts) that links-wireguard.test.ts relies on. */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { blake2s } from '../support/blake2s.js';

describe('test support: keyed BLAKE2s', () => {
  it('matches RFC 7693 appendix B and node for unkeyed BLAKE2s-256', () => {
    expect(blake2s(Buffer.from('abc')).toString('hex')).toBe('508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982');
    for (const n of [0, 1, 63, 64, 65, 128, 1000]) {
      const d = Buffer.alloc(n, n & 0xff);
      expect(blake2s(d).equals(createHash('blake2s256').update(d).digest())).toBe(true);
    }
  });

  it('matches the BLAKE2 reference keyed test vector (blake2s-kat, empty input)', () => {
    const key = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
    expect(blake2s(Buffer.alloc(0), 32, key).toString('hex')).toBe('48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49');
  });
});
