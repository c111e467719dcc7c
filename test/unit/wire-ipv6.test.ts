import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeIpv6,
  ipv6DecrementHopLimit,
  ipv6FragmentBody,
  ipv6HopLimit,
  ipv6MulticastMac,
  ipv6NextHeader,
  ipv6PayloadLen,
  ipv6SolicitedNode,
  parseIpv6,
  type Ipv6ExtensionInit,
} from '../../daemon/wire/ipv6.js';
import { formatIpv6, parseIpv6Text } from '../../daemon/wire/ip-text.js';
import type { Parsed } from '../../daemon/wire/result.js';

function typed(r: Parsed<unknown>): void {
  if (!r.ok) {
    expect(r.error.protocol).toBe('ipv6');
    expect(['truncated', 'bad-version', 'bad-length', 'bad-value', 'limit']).toContain(r.error.reason);
  }
}

const addr = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((a) => Buffer.from(a));
const fixed = fc.record({ trafficClass: fc.nat(255), flowLabel: fc.nat(0xfffff), hopLimit: fc.nat(255), src: addr, dst: addr });
/** Body lengths that fill whole 8-byte units, so that parse returns exactly what was emitted. */
const optionsExt = fc.record({
  type: fc.constantFrom(43, 60),
  body: fc.nat(4).chain((units) => fc.uint8Array({ minLength: units * 8 + 6, maxLength: units * 8 + 6 })),
});
const upper = fc.constantFrom(6, 17, 58, 59, 50, 51);

describe('ipv6', () => {
  it('parses a known ICMPv6 echo with a hop-by-hop header', () => {
    const src = parseIpv6Text('fe80::1');
    const dst = parseIpv6Text('ff02::1');
    if (!src.ok || !dst.ok) throw new Error('address');
    const pkt = encodeIpv6({
      trafficClass: 0,
      flowLabel: 0x12345,
      hopLimit: 1,
      src: src.value,
      dst: dst.value,
      protocol: 58,
      extensions: [{ type: 0, body: Buffer.from([5, 2, 0, 0, 1, 0]) }],
      payload: Buffer.from('8000000000010001', 'hex'),
    });
    expect(pkt.subarray(0, 8).toString('hex')).toBe('6001234500100001');
    expect(pkt.subarray(40, 48).toString('hex')).toBe('3a00050200000100');
    const r = parseIpv6(pkt);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value).toMatchObject({ nextHeader: 0, protocol: 58, upperOffset: 48, payloadLength: 16, flowLabel: 0x12345 });
    expect(formatIpv6(r.value.src)).toBe('fe80::1');
    expect([ipv6NextHeader(pkt), ipv6PayloadLen(pkt), ipv6HopLimit(pkt)]).toEqual([0, 16, 1]);
    expect(ipv6DecrementHopLimit(pkt)).toBe(0);
    expect(ipv6DecrementHopLimit(pkt)).toBe(0);
  });

  it('emit then parse gives the same value, extension headers included', () => {
    fc.assert(
      fc.property(
        fixed,
        fc.boolean(),
        fc.array(optionsExt, { maxLength: 4 }),
        fc.option(fc.record({ offset: fc.nat(0x1fff).map((x) => x * 8), more: fc.boolean(), id: fc.nat(0xffffffff) }), { nil: undefined }),
        upper,
        fc.uint8Array({ maxLength: 64 }),
        (f, hbh, exts, fr, protocol, payload) => {
          const extensions: Ipv6ExtensionInit[] = [];
          if (hbh) extensions.push({ type: 0, body: Buffer.alloc(6, 1) });
          extensions.push(...exts);
          if (fr) extensions.push({ type: 44, body: ipv6FragmentBody(fr.offset, fr.more, fr.id) });
          const pkt = encodeIpv6({ ...f, protocol, extensions, payload });
          const r = parseIpv6(pkt);
          expect(r.ok).toBe(true);
          if (!r.ok) return;
          const v = r.value;
          expect({ trafficClass: v.trafficClass, flowLabel: v.flowLabel, hopLimit: v.hopLimit, src: v.src, dst: v.dst }).toEqual(f);
          expect(v.protocol).toBe(protocol);
          expect(v.payloadLength).toBe(pkt.length - 40);
          expect(v.extensions.map((e) => [e.type, Buffer.from(e.body)])).toEqual(extensions.map((e) => [e.type, Buffer.from(e.body)]));
          expect(v.fragment).toEqual(fr ? { offset: fr.offset, moreFragments: fr.more, id: fr.id } : undefined);
          expect(Buffer.from(v.payload)).toEqual(Buffer.from(payload));
          expect(v.upperOffset).toBe(pkt.length - payload.length);
        },
      ),
    );
  });

  it('stops the walk at a non-first fragment', () => {
    const pkt = encodeIpv6({
      trafficClass: 0,
      flowLabel: 0,
      hopLimit: 64,
      src: Buffer.alloc(16),
      dst: Buffer.alloc(16),
      protocol: 60, // what follows the fragment header is data here, even if it looks like a header
      extensions: [{ type: 44, body: ipv6FragmentBody(1448, true, 7) }],
      payload: Buffer.alloc(16, 0xff),
    });
    const r = parseIpv6(pkt);
    expect(r.ok && r.value.protocol).toBe(60);
    expect(r.ok && r.value.upperOffset).toBe(48);
  });

  it('enforces the extension header limit and hop-by-hop placement', () => {
    const base = { trafficClass: 0, flowLabel: 0, hopLimit: 64, src: Buffer.alloc(16), dst: Buffer.alloc(16), protocol: 6, payload: Buffer.alloc(0) };
    const many = encodeIpv6({ ...base, extensions: Array.from({ length: 9 }, () => ({ type: 60, body: Buffer.alloc(6) })) });
    expect(parseIpv6(many)).toMatchObject({ ok: false, error: { protocol: 'ipv6', reason: 'limit' } });
    expect(parseIpv6(many, { maxExtensionHeaders: 9 }).ok).toBe(true);
    const late = encodeIpv6({ ...base, extensions: [{ type: 60, body: Buffer.alloc(6) }, { type: 0, body: Buffer.alloc(6) }] });
    expect(parseIpv6(late)).toMatchObject({ ok: false, error: { reason: 'bad-value' } });
    const twoFrags = encodeIpv6({ ...base, extensions: [{ type: 44, body: ipv6FragmentBody(0, true, 1) }, { type: 44, body: ipv6FragmentBody(0, true, 1) }] });
    expect(parseIpv6(twoFrags)).toMatchObject({ ok: false, error: { reason: 'bad-value' } });
  });

  it('random bytes and every truncation give a typed error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 120 }), (bytes) => {
        const b = Buffer.from(bytes);
        typed(parseIpv6(b));
        if (b.length >= 40) {
          b[0] = 0x60;
          b.writeUInt16BE(b.length - 40, 4);
          typed(parseIpv6(b));
        }
      }),
    );
    fc.assert(
      fc.property(fixed, fc.array(optionsExt, { maxLength: 3 }), upper, fc.uint8Array({ maxLength: 16 }), (f, extensions, protocol, payload) => {
        const pkt = encodeIpv6({ ...f, protocol, extensions, payload });
        for (let n = 0; n < pkt.length; n++) {
          const r = parseIpv6(pkt.subarray(0, n));
          expect(r.ok).toBe(false);
          typed(r);
        }
        // A shrunken payload length walks into the extension headers without reading past it.
        for (let pl = 0; pl < pkt.length - 40; pl++) {
          const b = Buffer.from(pkt);
          b.writeUInt16BE(pl, 4);
          typed(parseIpv6(b));
        }
      }),
    );
  });

  it('formats addresses canonically (RFC 5952) and parses them back', () => {
    const cases: [string, string][] = [
      ['::', '::'],
      ['::1', '::1'],
      ['2001:DB8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'],
      ['2001:db8::1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
      ['fe80::0001', 'fe80::1'],
      ['::ffff:192.0.2.1', '::ffff:c000:201'],
      ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
    ];
    for (const [input, canon] of cases) {
      const r = parseIpv6Text(input);
      expect(r.ok).toBe(true);
      if (r.ok) expect(formatIpv6(r.value)).toBe(canon);
    }
    for (const bad of ['', ':', ':::', '1::2::3', '1:2:3:4:5:6:7:8:9', '12345::', 'g::', '::1%eth0', '1:2:3:4:5:6:7', '::256.1.1.1', '1.2.3.4']) {
      expect(parseIpv6Text(bad).ok).toBe(false);
    }
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constant(0), fc.nat(0xffff)), { minLength: 8, maxLength: 8 }),
        (groups) => {
          const b = Buffer.alloc(16);
          groups.forEach((g, i) => b.writeUInt16BE(g, i * 2));
          const text = formatIpv6(b);
          // The WHATWG URL serializer implements the same canonical form.
          expect(`[${text}]`).toBe(new URL(`http://[${groups.map((g) => g.toString(16)).join(':')}]/`).hostname);
          expect(parseIpv6Text(text)).toEqual({ ok: true, value: b });
        },
      ),
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 45 }), (s) => {
        const r = parseIpv6Text(s);
        if (!r.ok) expect(r.error.protocol).toBe('ipv6');
      }),
    );
  });

  it('multicast helpers', () => {
    const a = parseIpv6Text('2001:db8::aabb:ccdd');
    if (!a.ok) throw new Error('address');
    const sn = ipv6SolicitedNode(a.value);
    expect(formatIpv6(sn)).toBe('ff02::1:ffbb:ccdd');
    expect(ipv6MulticastMac(sn)).toBe(0x3333_ffbb_ccdd);
  });
});
