import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeIpv4,
  fixIpv4Checksum,
  ipv4DecrementTtl,
  ipv4Dst,
  ipv4HeaderLen,
  ipv4IsFragment,
  ipv4Protocol,
  ipv4Src,
  ipv4TotalLen,
  ipv4Ttl,
  parseIpv4,
  type Ipv4Fields,
} from '../../daemon/wire/ipv4.js';
import { formatIpv4, parseIpv4Text } from '../../daemon/wire/ip-text.js';
import type { Parsed } from '../../daemon/wire/result.js';

function typed(r: Parsed<unknown>): void {
  if (!r.ok) {
    expect(r.error.protocol).toBe('ipv4');
    expect(['truncated', 'bad-version', 'bad-length', 'bad-checksum', 'bad-value']).toContain(r.error.reason);
  }
}

const ipv4Fields: fc.Arbitrary<Ipv4Fields & { options: Uint8Array }> = fc.record({
  dscp: fc.nat(63),
  ecn: fc.nat(3),
  id: fc.nat(0xffff),
  dontFragment: fc.boolean(),
  moreFragments: fc.boolean(),
  fragmentOffset: fc.nat(0x1fff).map((x) => x * 8),
  ttl: fc.nat(255),
  protocol: fc.nat(255),
  src: fc.nat(0xffffffff),
  dst: fc.nat(0xffffffff),
  options: fc.nat(10).chain((words) => fc.uint8Array({ minLength: words * 4, maxLength: words * 4 })),
});

describe('ipv4', () => {
  it('parses a known header and ignores link padding', () => {
    const pkt = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
    const full = Buffer.concat([pkt, Buffer.alloc(0x73 - 20, 0xaa), Buffer.alloc(6)]);
    fixIpv4Checksum(full);
    expect(full.readUInt16BE(10)).toBe(0xb861);
    const r = parseIpv4(full);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value).toMatchObject({
      headerLength: 20,
      totalLength: 0x73,
      dontFragment: true,
      moreFragments: false,
      fragmentOffset: 0,
      ttl: 64,
      protocol: 17,
      src: 0xc0a80001,
      dst: 0xc0a800c7,
      checksum: 0xb861,
    });
    expect(r.value.payload.length).toBe(0x73 - 20);
    expect(formatIpv4(r.value.dst)).toBe('192.168.0.199');
  });

  it('emit then parse gives the same value', () => {
    fc.assert(
      fc.property(ipv4Fields, fc.uint8Array({ maxLength: 64 }), (f, payload) => {
        const b = encodeIpv4({ ...f, payload });
        const r = parseIpv4(b);
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        const { headerLength, totalLength, checksum, payload: p, options, ...rest } = r.value;
        const { options: o, ...want } = f;
        expect(rest).toEqual(want);
        expect(Buffer.from(options)).toEqual(Buffer.from(o));
        expect(Buffer.from(p)).toEqual(Buffer.from(payload));
        expect(headerLength).toBe(20 + o.length);
        expect(totalLength).toBe(b.length);
        expect(checksum).toBe(b.readUInt16BE(10));
        expect([ipv4HeaderLen(b), ipv4TotalLen(b), ipv4Protocol(b), ipv4Src(b), ipv4Dst(b), ipv4Ttl(b)]).toEqual([
          headerLength,
          totalLength,
          f.protocol,
          f.src,
          f.dst,
          f.ttl,
        ]);
        expect(ipv4IsFragment(b)).toBe(f.moreFragments || f.fragmentOffset !== 0);
      }),
    );
  });

  it('detects corruption of any header byte except as an equivalent checksum', () => {
    fc.assert(
      fc.property(ipv4Fields, fc.nat(), fc.integer({ min: 1, max: 255 }), (f, at, x) => {
        const b = encodeIpv4({ ...f, payload: Buffer.alloc(8) });
        const i = at % ipv4HeaderLen(b);
        b[i] = b[i]! ^ x;
        const r = parseIpv4(b);
        typed(r);
        if (r.ok) expect(r.value.checksum === 0 || r.value.checksum === 0xffff).toBe(true);
      }),
    );
  });

  it('ipv4DecrementTtl keeps the checksum valid', () => {
    fc.assert(
      fc.property(ipv4Fields, (f) => {
        const b = encodeIpv4({ ...f, payload: Buffer.alloc(0) });
        const ttl = ipv4DecrementTtl(b);
        expect(ttl).toBe(Math.max(0, f.ttl - 1));
        expect(parseIpv4(b).ok).toBe(true);
      }),
    );
  });

  it('rejects bad versions, IHL and lengths with typed errors', () => {
    const good = encodeIpv4({ dscp: 0, ecn: 0, id: 1, dontFragment: false, moreFragments: false, fragmentOffset: 0, ttl: 64, protocol: 6, src: 1, dst: 2, payload: Buffer.alloc(4) });
    const mutate = (fn: (b: Buffer) => void): Parsed<unknown> => {
      const b = Buffer.from(good);
      fn(b);
      fixIpv4Checksum(b);
      return parseIpv4(b);
    };
    expect(mutate((b) => (b[0] = 0x65))).toMatchObject({ ok: false, error: { reason: 'bad-version' } });
    expect(mutate((b) => (b[0] = 0x44))).toMatchObject({ ok: false, error: { reason: 'bad-length' } });
    expect(mutate((b) => b.writeUInt16BE(19, 2))).toMatchObject({ ok: false, error: { reason: 'bad-length' } });
    expect(mutate((b) => b.writeUInt16BE(25, 2))).toMatchObject({ ok: false, error: { reason: 'truncated' } });
    expect(mutate((b) => (b[0] = 0x4f))).toMatchObject({ ok: false, error: { reason: 'truncated' } });
    const bad = Buffer.from(good);
    bad[8] = 1;
    expect(parseIpv4(bad)).toMatchObject({ ok: false, error: { reason: 'bad-checksum' } });
    expect(parseIpv4(bad, { verifyChecksum: false }).ok).toBe(true);
  });

  it('random bytes and every truncation give a typed error', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => typed(parseIpv4(Buffer.from(bytes)))));
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
        const b = Buffer.from(bytes);
        if (b.length >= 20) {
          b[0] = 0x40 | (b[0]! & 0x0f);
          b.writeUInt16BE(Math.min(b.readUInt16BE(2), b.length + 2), 2);
          fixIpv4Checksum(b);
        }
        typed(parseIpv4(b));
      }),
    );
    fc.assert(
      fc.property(ipv4Fields, fc.uint8Array({ maxLength: 30 }), (f, payload) => {
        const b = encodeIpv4({ ...f, payload });
        for (let n = 0; n < b.length; n++) {
          const r = parseIpv4(b.subarray(0, n));
          expect(r.ok).toBe(false);
          typed(r);
        }
      }),
    );
  });

  it('address text', () => {
    expect(parseIpv4Text('10.0.2.15')).toEqual({ ok: true, value: 0x0a00020f });
    expect(parseIpv4Text('255.255.255.255')).toEqual({ ok: true, value: 0xffffffff });
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.4 ', 'a.b.c.d', '1..2.3']) {
      expect(parseIpv4Text(bad).ok).toBe(false);
    }
    fc.assert(
      fc.property(fc.nat(0xffffffff), (a) => {
        expect(parseIpv4Text(formatIpv4(a))).toEqual({ ok: true, value: a });
      }),
    );
  });
});
