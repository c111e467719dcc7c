import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { udpFrames } from '../../daemon/gateway/frames.js';
import { ip4, ip6 } from '../../daemon/endpoint/addr.js';
import { parseEthernet } from '../../daemon/wire/ethernet.js';
import { parseIpv4 } from '../../daemon/wire/ipv4.js';
import { parseIpv6 } from '../../daemon/wire/ipv6.js';
import { parseUdp } from '../../daemon/wire/udp.js';
import { Ipv4Reassembler } from '../../daemon/wire/ipv4-reassembly.js';

const L2 = { vmMac: 0x5254_0000_0001, gwMac: 0x5254_0000_00fe };
const SRC4 = 0xc633_6401; // 198.51.100.1
const DST4 = 0x0a00_0002;

function eth(f: Buffer): Buffer {
  const e = parseEthernet(f);
  if (!e.ok) throw new Error(e.error.detail);
  return e.value.payload;
}

describe('udpFrames', () => {
  it('sends a datagram that fits as one unfragmented frame with DF', () => {
    const fs = udpFrames(L2, ip4(SRC4), 53, ip4(DST4), 4444, Buffer.alloc(1472, 7), 1500);
    expect(fs).toHaveLength(1);
    const p = parseIpv4(eth(fs[0]!));
    expect(p.ok && p.value.dontFragment && !p.value.moreFragments && p.value.totalLength).toBe(1500);
  });

  it('fragments an IPv4 datagram larger than the MTU; the pieces reassemble into the datagram, checksum valid', () => {
    const payload = randomBytes(4000);
    const fs = udpFrames(L2, ip4(SRC4), 7011, ip4(DST4), 40000, payload, 1500);
    expect(fs.length).toBe(3);
    const r = new Ipv4Reassembler();
    let whole: Buffer | undefined;
    for (const f of [...fs].reverse()) {
      const ip = eth(f);
      expect(ip.length).toBeLessThanOrEqual(1500);
      const p = parseIpv4(ip);
      if (!p.ok) throw new Error(p.error.detail);
      expect(p.value.dontFragment).toBe(false);
      const res = r.push(p.value, 0);
      if (res.status === 'complete') whole = res.packet;
    }
    expect(whole).toBeDefined();
    const p = parseIpv4(whole!);
    if (!p.ok) throw new Error(p.error.detail);
    const u = parseUdp(p.value.payload, { version: 4, src: SRC4, dst: DST4 });
    expect(u.ok && Buffer.from(u.value.payload).equals(payload)).toBe(true);
  });

  it('fragments an IPv6 datagram with Fragment headers, offsets in 8-byte units, one id', () => {
    const a = Buffer.from('20010db8000000000000000000000001', 'hex');
    const b = Buffer.from('fd000000000000000000000000000002', 'hex');
    const payload = randomBytes(3000);
    const fs = udpFrames(L2, ip6(a), 53, ip6(b), 5353, payload, 1280);
    expect(fs.length).toBe(3);
    const parts: { offset: number; more: boolean; id: number; data: Buffer }[] = [];
    for (const f of fs) {
      const ip = eth(f);
      expect(ip.length).toBeLessThanOrEqual(1280);
      const p = parseIpv6(ip);
      if (!p.ok) throw new Error(p.error.detail);
      const frag = p.value.fragment!;
      parts.push({ offset: frag.offset, more: frag.moreFragments, id: frag.id, data: Buffer.from(ip.subarray(48)) });
    }
    expect(new Set(parts.map((x) => x.id)).size).toBe(1);
    expect(parts.map((x) => x.more)).toEqual([true, true, false]);
    let off = 0;
    for (const x of parts) {
      expect(x.offset).toBe(off);
      off += x.data.length;
    }
    const datagram = Buffer.concat(parts.map((x) => x.data));
    const u = parseUdp(datagram, { version: 6, src: a, dst: b });
    expect(u.ok && Buffer.from(u.value.payload).equals(payload)).toBe(true);
  });
});
