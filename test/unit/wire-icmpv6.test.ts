import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { IpPseudo } from '../../daemon/wire/checksum.js';
import { encodeIcmpv6, findNdpOption, parseIcmpv6, type Icmpv6Init, type NdpOptionInit } from '../../daemon/wire/icmpv6.js';
import { parseIpv6Text } from '../../daemon/wire/ip-text.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';

const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((b) => Buffer.from(b));
const addr = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((a) => Buffer.from(a));
const mac = fc.integer({ min: 0, max: MAC_BROADCAST });

const ndpOption: fc.Arbitrary<NdpOptionInit> = fc.oneof(
  fc.record({ kind: fc.constantFrom('source-ll' as const, 'target-ll' as const), mac }),
  fc.record({
    kind: fc.constant('prefix' as const),
    prefixLength: fc.nat(128),
    onLink: fc.boolean(),
    autonomous: fc.boolean(),
    validLifetime: fc.nat(0xffffffff),
    preferredLifetime: fc.nat(0xffffffff),
    prefix: addr,
  }),
  fc.record({ kind: fc.constant('mtu' as const), mtu: fc.nat(0xffffffff) }),
  fc.record({ kind: fc.constant('rdnss' as const), lifetime: fc.nat(0xffffffff), servers: fc.array(addr, { minLength: 1, maxLength: 3 }) }),
  fc.record({
    kind: fc.constant('other' as const),
    type: fc.nat(255).filter((t) => ![1, 2, 3, 5, 25].includes(t)),
    data: fc.nat(3).chain((u) => fc.uint8Array({ minLength: u * 8 + 6, maxLength: u * 8 + 6 }).map((b) => Buffer.from(b))),
  }),
);
const options = fc.array(ndpOption, { maxLength: 4 });

const message: fc.Arbitrary<Icmpv6Init> = fc.oneof(
  fc.record({ kind: fc.constantFrom('echo-request' as const, 'echo-reply' as const), id: fc.nat(0xffff), seq: fc.nat(0xffff), data: bytes(64) }),
  fc.record({ kind: fc.constantFrom('dest-unreachable' as const, 'time-exceeded' as const), code: fc.nat(255), original: bytes(64) }),
  fc.record({ kind: fc.constant('packet-too-big' as const), code: fc.constant(0), mtu: fc.nat(0xffffffff), original: bytes(64) }),
  fc.record({ kind: fc.constant('parameter-problem' as const), code: fc.nat(3), pointer: fc.nat(0xffffffff), original: bytes(64) }),
  fc.record({ kind: fc.constant('router-solicitation' as const), options }),
  fc.record({
    kind: fc.constant('router-advertisement' as const),
    curHopLimit: fc.nat(255),
    managed: fc.boolean(),
    otherConfig: fc.boolean(),
    flags: fc.nat(0x3f),
    routerLifetime: fc.nat(0xffff),
    reachableTime: fc.nat(0xffffffff),
    retransTimer: fc.nat(0xffffffff),
    options,
  }),
  fc.record({ kind: fc.constant('neighbor-solicitation' as const), target: addr, options }),
  fc.record({ kind: fc.constant('neighbor-advertisement' as const), router: fc.boolean(), solicited: fc.boolean(), override: fc.boolean(), target: addr, options }),
  fc.record({
    kind: fc.constant('other' as const),
    type: fc.nat(255).filter((t) => !(t >= 1 && t <= 4) && ![128, 129, 133, 134, 135, 136].includes(t)),
    code: fc.nat(255),
    body: bytes(32),
  }),
);
const pseudo: fc.Arbitrary<IpPseudo> = fc.record({ version: fc.constant(6 as const), src: addr, dst: addr });

function ip6(text: string): Buffer {
  const r = parseIpv6Text(text);
  if (!r.ok) throw new Error(text);
  return r.value;
}

describe('icmpv6', () => {
  it('parses a hand-built router advertisement with prefix, MTU, RDNSS and source link-layer options', () => {
    const ra = Buffer.from(
      '8600' + '0000' + '40c0' + '0708' + '00000000' + '00000000' +
        '0101525400000001' + // source link-layer address 52:54:00:00:00:01
        '0501000000000578' + // MTU 1400
        '0304' + '40c0' + '00278d00' + '00093a80' + '00000000' + '20010db8000100000000000000000000' + // prefix 2001:db8:1::/64
        '1903' + '0000' + '00000e10' + '20010db8000100000000000000000001', // RDNSS 2001:db8:1::1 for 3600 s
      'hex',
    );
    const p: IpPseudo = { version: 6, src: ip6('fe80::5054:ff:fe00:1'), dst: ip6('ff02::1') };
    // Fill in the checksum with our emitter's arithmetic, then check the parse both ways.
    const r0 = parseIcmpv6(ra);
    expect(r0.ok).toBe(true);
    if (!r0.ok || r0.value.kind !== 'router-advertisement') throw new Error('not an RA');
    const m = r0.value;
    expect(m).toMatchObject({ curHopLimit: 64, managed: true, otherConfig: true, flags: 0, routerLifetime: 1800, reachableTime: 0, retransTimer: 0 });
    expect(findNdpOption(m.options, 'source-ll')?.mac).toBe(0x5254_0000_0001);
    expect(findNdpOption(m.options, 'mtu')?.mtu).toBe(1400);
    const prefix = findNdpOption(m.options, 'prefix');
    expect(prefix).toMatchObject({ prefixLength: 64, onLink: true, autonomous: true, validLifetime: 2592000, preferredLifetime: 604800 });
    expect(prefix?.prefix).toEqual(ip6('2001:db8:1::'));
    const rdnss = findNdpOption(m.options, 'rdnss');
    expect(rdnss?.lifetime).toBe(3600);
    expect(rdnss?.servers).toEqual([ip6('2001:db8:1::1')]);
    const encoded = encodeIcmpv6(m, p);
    expect(encoded.subarray(4)).toEqual(ra.subarray(4));
    expect(parseIcmpv6(encoded, p).ok).toBe(true);
    expect(parseIcmpv6(encoded, { ...p, dst: ip6('ff02::2') })).toMatchObject({ ok: false, error: { protocol: 'icmpv6', reason: 'bad-checksum' } });
  });

  it('builds a neighbor solicitation whose checksum verifies independently', () => {
    // fe80::1 asking ff02::1:ff00:2 for fe80::2, source link-layer 52:54:00:00:00:01.
    const ns = Buffer.concat([Buffer.from('87000000' + '00000000', 'hex'), ip6('fe80::2'), Buffer.from('0101525400000001', 'hex')]);
    const p: IpPseudo = { version: 6, src: ip6('fe80::1'), dst: ip6('ff02::1:ff00:2') };
    const built = encodeIcmpv6({ kind: 'neighbor-solicitation', target: ip6('fe80::2'), options: [{ kind: 'source-ll', mac: 0x5254_0000_0001 }] }, p);
    expect(built.subarray(4)).toEqual(ns.subarray(4));
    // Independent checksum: sum the pseudo-header and message by hand.
    const ph = Buffer.concat([p.src as Buffer, p.dst as Buffer, Buffer.from([0, 0, 0, built.length, 0, 0, 0, 58]), built]);
    let s = 0;
    for (let i = 0; i < ph.length; i += 2) s += ph.readUInt16BE(i);
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    expect(s).toBe(0xffff);
    const r = parseIcmpv6(built, p);
    expect(r.ok && r.value.kind).toBe('neighbor-solicitation');
  });

  it('emit then parse gives the same value', () => {
    fc.assert(
      fc.property(message, pseudo, (m, p) => {
        expect(parseIcmpv6(encodeIcmpv6(m, p), p)).toEqual({ ok: true, value: m });
      }),
    );
  });

  it('rejects NDP with a non-zero code or a zero-length option', () => {
    const p: IpPseudo = { version: 6, src: Buffer.alloc(16), dst: Buffer.alloc(16) };
    const b = encodeIcmpv6({ kind: 'router-solicitation', options: [{ kind: 'source-ll', mac: 1 }] }, p);
    const code = Buffer.from(b);
    code[1] = 1;
    expect(parseIcmpv6(code)).toMatchObject({ ok: false, error: { reason: 'bad-value' } });
    const zero = Buffer.from(b);
    zero[9] = 0;
    expect(parseIcmpv6(zero)).toMatchObject({ ok: false, error: { reason: 'bad-length' } });
    const long = Buffer.from(b);
    long[9] = 2;
    expect(parseIcmpv6(long)).toMatchObject({ ok: false, error: { reason: 'truncated' } });
  });

  it('random bytes and every truncation give a typed error', () => {
    fc.assert(
      fc.property(bytes(120), fc.constantFrom(133, 134, 135, 136, 128, 1, 2, 4, 200), (b, type) => {
        if (b.length > 0) b[0] = type;
        if (b.length > 1) b[1] = 0;
        const r = parseIcmpv6(b);
        if (!r.ok) expect(r.error.protocol).toBe('icmpv6');
      }),
    );
    fc.assert(
      fc.property(message, pseudo, (m, p) => {
        const b = encodeIcmpv6(m, p);
        for (let n = 0; n < b.length; n++) {
          const r = parseIcmpv6(b.subarray(0, n));
          if (!r.ok) expect(r.error.protocol).toBe('icmpv6');
          const v = parseIcmpv6(b.subarray(0, n), p);
          expect(v.ok).toBe(false);
        }
      }),
    );
  });
});
