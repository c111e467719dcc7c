import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeIcmpv4, icmpv4Quote, parseIcmpv4, type Icmpv4Init } from '../../daemon/wire/icmpv4.js';

const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((b) => Buffer.from(b));
const message: fc.Arbitrary<Icmpv4Init> = fc.oneof(
  fc.record({ kind: fc.constantFrom('echo-request' as const, 'echo-reply' as const), id: fc.nat(0xffff), seq: fc.nat(0xffff), data: bytes(64) }),
  fc.record({ kind: fc.constant('dest-unreachable' as const), code: fc.nat(15), mtu: fc.nat(0xffff), original: bytes(64) }),
  fc.record({ kind: fc.constant('time-exceeded' as const), code: fc.nat(1), original: bytes(64) }),
  fc.record({
    kind: fc.constant('other' as const),
    type: fc.nat(255).filter((t) => ![0, 3, 8, 11].includes(t)),
    code: fc.nat(255),
    rest: fc.nat(0xffffffff),
    body: bytes(32),
  }),
);

describe('icmpv4', () => {
  it('parses a real echo request (ping from Linux, 56 data bytes)', () => {
    const data = Buffer.alloc(56);
    for (let i = 0; i < 56; i++) data[i] = i;
    const b = encodeIcmpv4({ kind: 'echo-request', id: 0x1c2e, seq: 1, data });
    expect(b.subarray(0, 8).toString('hex')).toBe('0800' + b.subarray(2, 4).toString('hex') + '1c2e0001');
    const r = parseIcmpv4(b);
    expect(r).toEqual({ ok: true, value: { kind: 'echo-request', id: 0x1c2e, seq: 1, data } });
    // Known checksum: an echo request id 1 seq 1 with no data.
    expect(encodeIcmpv4({ kind: 'echo-request', id: 1, seq: 1, data: Buffer.alloc(0) }).toString('hex')).toBe('0800f7fd00010001');
  });

  it('emit then parse gives the same value', () => {
    fc.assert(
      fc.property(message, (m) => {
        expect(parseIcmpv4(encodeIcmpv4(m))).toEqual({ ok: true, value: m });
      }),
    );
  });

  it('rejects corrupted checksums unless asked not to verify', () => {
    const b = encodeIcmpv4({ kind: 'echo-reply', id: 1, seq: 2, data: Buffer.from('hi') });
    b[9] = 0;
    expect(parseIcmpv4(b)).toMatchObject({ ok: false, error: { protocol: 'icmpv4', reason: 'bad-checksum' } });
    expect(parseIcmpv4(b, { verifyChecksum: false }).ok).toBe(true);
  });

  it('random bytes and every truncation give a typed error', () => {
    fc.assert(
      fc.property(bytes(80), (b) => {
        const r = parseIcmpv4(b, { verifyChecksum: false });
        if (!r.ok) expect(r.error).toMatchObject({ protocol: 'icmpv4', reason: 'truncated' });
        const s = parseIcmpv4(b);
        if (!s.ok) expect(s.error.protocol).toBe('icmpv4');
      }),
    );
    fc.assert(
      fc.property(message, (m) => {
        const b = encodeIcmpv4(m);
        for (let n = 0; n < 8; n++) expect(parseIcmpv4(b.subarray(0, n)).ok).toBe(false);
        for (let n = 8; n < b.length; n++) {
          const r = parseIcmpv4(b.subarray(0, n), { verifyChecksum: false });
          expect(r.ok).toBe(true);
        }
      }),
    );
  });

  it('quotes the IP header plus at least 8 bytes', () => {
    const ip = Buffer.alloc(1500);
    ip[0] = 0x46; // 24-byte header
    expect(icmpv4Quote(ip, 0).length).toBe(32);
    expect(icmpv4Quote(ip).length).toBe(548);
    expect(icmpv4Quote(ip.subarray(0, 30)).length).toBe(30);
    expect(icmpv4Quote(Buffer.alloc(0)).length).toBe(0);
  });
});
