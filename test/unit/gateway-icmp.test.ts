import { describe, expect, it } from 'vitest';
import { dissect } from '../../daemon/gateway/dissect.js';
import { IcmpService, TokenBucket } from '../../daemon/gateway/icmp.js';
import { makeGatewayNet } from '../../daemon/gateway/types.js';
import { encodeEthernet, ETHERTYPE_IPV4, ETHERTYPE_IPV6, type EthernetFrame } from '../../daemon/wire/ethernet.js';
import { encodeIcmpv4, type Icmpv4Init } from '../../daemon/wire/icmpv4.js';
import { encodeIcmpv6, type Icmpv6Init } from '../../daemon/wire/icmpv6.js';
import { encodeIpv4 } from '../../daemon/wire/ipv4.js';
import { encodeIpv6 } from '../../daemon/wire/ipv6.js';
import { parseIpv6Text } from '../../daemon/wire/ip-text.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';
import { encodeUdp } from '../../daemon/wire/udp.js';

const GW_MAC = 0x5254_0000_00fe;
const MAC1 = 0x5254_0000_0001;
const GW = 0x0a01_0001;
const VM1 = 0x0a01_0002;
const net = makeGatewayNet({ name: 'lan', subnet: '10.1.0.0/24', gatewayIp: GW, gatewayMac: GW_MAC, ipv6: 'fd00:1::/64', mtu: 1500 });
const v6 = (s: string): Buffer => {
  const r = parseIpv6Text(s);
  if (!r.ok) throw new Error(s);
  return r.value;
};
const LL_GW = v6('fe80::5054:ff:fe00:fe');
const GLOBAL_GW = v6('fd00:1::1');
const VM1_LL = v6('fe80::5054:ff:fe00:1');
const VM1_GLOBAL = v6('fd00:1::5054:ff:fe00:1');

function ipv4(src: number, dst: number, protocol: number, payload: Buffer, frag: { offset?: number; mf?: boolean } = {}): Buffer {
  return encodeIpv4({ dscp: 0, ecn: 0, id: 99, dontFragment: false, moreFragments: frag.mf ?? false, fragmentOffset: frag.offset ?? 0, ttl: 64, protocol, src, dst, payload });
}

function eth4(packet: Buffer, dst = GW_MAC, src = MAC1): Buffer {
  return encodeEthernet({ dst, src, etherType: ETHERTYPE_IPV4, payload: packet });
}

function ping4(src: number, dst: number, data = Buffer.from('abcdefgh')): Buffer {
  return eth4(ipv4(src, dst, 1, encodeIcmpv4({ kind: 'echo-request', id: 0x1234, seq: 7, data })));
}

function udp4(src: number, dst: number, payload = Buffer.alloc(20, 0x61)): Buffer {
  return ipv4(src, dst, 17, encodeUdp({ srcPort: 40000, dstPort: 9, payload }, { version: 4, src, dst }));
}

function ipv6(src: Buffer, dst: Buffer, protocol: number, payload: Buffer): Buffer {
  return encodeIpv6({ trafficClass: 0, flowLabel: 0, hopLimit: 64, src, dst, protocol, payload });
}

function icmp6(src: Buffer, dst: Buffer, m: Icmpv6Init): Buffer {
  return ipv6(src, dst, 58, encodeIcmpv6(m, { version: 6, src, dst }));
}

function eth6(packet: Buffer, dst = GW_MAC, src = MAC1): Buffer {
  return encodeEthernet({ dst, src, etherType: ETHERTYPE_IPV6, payload: packet });
}

function ethOf(f: Buffer): EthernetFrame {
  const d = dissect(f);
  if (d.kind === 'invalid') throw new Error('invalid');
  return d.eth;
}

describe('TokenBucket', () => {
  it('spends a burst, then refills at the rate, capped at the burst', () => {
    const b = new TokenBucket(10, 3);
    expect([b.take(0), b.take(0), b.take(0), b.take(0)]).toEqual([true, true, true, false]);
    expect(b.take(50)).toBe(false); // 0.5 token
    expect(b.take(100)).toBe(true); // 1 token at 100 ms
    expect(b.available(100_000)).toBe(3);
  });
});

describe('gateway ICMP echo', () => {
  it('replies to an ICMPv4 echo request for the gateway address', () => {
    const s = new IcmpService(net);
    const d = dissect(ping4(VM1, GW));
    if (d.kind !== 'ipv4') throw new Error();
    const out = s.echoV4(d.eth, d.ip, d.icmp);
    const r = dissect(out!);
    if (r.kind !== 'ipv4') throw new Error();
    expect(r.eth).toMatchObject({ dst: MAC1, src: GW_MAC });
    expect(r.ip).toMatchObject({ src: GW, dst: VM1, ttl: 64, protocol: 1 });
    expect(r.icmp).toEqual({ kind: 'echo-reply', id: 0x1234, seq: 7, data: Buffer.from('abcdefgh') });
    // Without a pre-parsed message, too.
    expect(s.echoV4(d.eth, d.ip)).not.toBeNull();
    expect(s.stats.echoReplies).toBe(2);
  });

  it('does not reply for other addresses, from a broadcast source, or to fragments', () => {
    const s = new IcmpService(net);
    for (const f of [ping4(VM1, 0x0a01_0003), ping4(0x0a01_00ff, GW), ping4(0, GW)]) {
      const d = dissect(f);
      if (d.kind !== 'ipv4') throw new Error();
      expect(s.echoV4(d.eth, d.ip, d.icmp)).toBeNull();
    }
    const frag = eth4(ipv4(VM1, GW, 1, encodeIcmpv4({ kind: 'echo-request', id: 1, seq: 1, data: Buffer.alloc(8) }), { mf: true }));
    const d = dissect(frag);
    if (d.kind !== 'ipv4') throw new Error();
    expect(s.echoV4(d.eth, d.ip)).toBeNull();
    expect(s.stats.echoReplies).toBe(0);
  });

  it('replies to ICMPv6 echo for the link-local and global gateway addresses only', () => {
    const s = new IcmpService(net);
    const req: Icmpv6Init = { kind: 'echo-request', id: 5, seq: 6, data: Buffer.from('ping') };
    for (const [src, dst] of [
      [VM1_LL, LL_GW],
      [VM1_GLOBAL, GLOBAL_GW],
    ] as const) {
      const d = dissect(eth6(icmp6(src, dst, req)));
      if (d.kind !== 'ipv6' || !d.icmp) throw new Error();
      const r = dissect(s.echoV6(d.eth, d.ip, d.icmp)!);
      if (r.kind !== 'ipv6') throw new Error();
      expect(r.ip.src).toEqual(dst);
      expect(r.ip.dst).toEqual(src);
      expect(r.eth.dst).toBe(MAC1);
      expect(r.icmp).toEqual({ kind: 'echo-reply', id: 5, seq: 6, data: Buffer.from('ping') });
    }
    const other = dissect(eth6(icmp6(VM1_GLOBAL, v6('fd00:1::77'), req)));
    if (other.kind !== 'ipv6' || !other.icmp) throw new Error();
    expect(s.echoV6(other.eth, other.ip, other.icmp)).toBeNull();
  });
});

describe('gateway ICMP errors', () => {
  it('builds destination unreachable (port, admin, host) quoting the offending packet', () => {
    const s = new IcmpService(net);
    const pkt = udp4(VM1, 0x0808_0808);
    const f = eth4(pkt);
    for (const [kind, code] of [
      ['port-unreachable', 3],
      ['admin-prohibited', 13],
      ['host-unreachable', 1],
      ['net-unreachable', 0],
    ] as const) {
      const r = dissect(s.errorV4(ethOf(f), pkt, kind, 0)!);
      if (r.kind !== 'ipv4') throw new Error();
      expect(r.eth.dst).toBe(MAC1);
      expect(r.ip).toMatchObject({ src: GW, dst: VM1, protocol: 1 });
      expect(r.icmp).toEqual({ kind: 'dest-unreachable', code, mtu: 0, original: pkt });
    }
    const fragNeeded = dissect(s.errorV4(ethOf(f), pkt, 'frag-needed', 0, { mtu: 1280, src: 0x0a01_00fe })!);
    if (fragNeeded.kind !== 'ipv4') throw new Error();
    expect(fragNeeded.icmp).toMatchObject({ kind: 'dest-unreachable', code: 4, mtu: 1280 });
    expect(fragNeeded.ip.src).toBe(0x0a01_00fe);
    const ttl = dissect(s.errorV4(ethOf(f), pkt, 'ttl-exceeded', 0)!);
    expect(ttl.kind === 'ipv4' && ttl.icmp?.kind).toBe('time-exceeded');
  });

  it('quotes at most what fits in 576 bytes', () => {
    const s = new IcmpService(net);
    const pkt = udp4(VM1, 0x0808_0808, Buffer.alloc(1400, 1));
    const out = s.errorV4(ethOf(eth4(pkt)), pkt, 'port-unreachable', 0)!;
    const r = dissect(out);
    if (r.kind !== 'ipv4' || r.icmp?.kind !== 'dest-unreachable') throw new Error();
    expect(r.ip.totalLength).toBe(576);
    expect(r.icmp.original).toEqual(pkt.subarray(0, 548));
  });

  it('never sends an error about an ICMP error, a broadcast, a group frame or a later fragment', () => {
    const s = new IcmpService(net);
    const icmpErr = ipv4(VM1, 0x0808_0808, 1, encodeIcmpv4({ kind: 'dest-unreachable', code: 3, mtu: 0, original: Buffer.alloc(28) } satisfies Icmpv4Init));
    const toBroadcast = udp4(VM1, 0x0a01_00ff);
    const fromZero = udp4(0, 0x0808_0808);
    const later = ipv4(VM1, 0x0808_0808, 17, Buffer.alloc(16), { offset: 1480 });
    for (const p of [icmpErr, toBroadcast, fromZero, later]) expect(s.errorV4(ethOf(eth4(p)), p, 'port-unreachable', 0)).toBeNull();
    const unicast = udp4(VM1, 0x0808_0808);
    expect(s.errorV4(ethOf(eth4(unicast, MAC_BROADCAST)), unicast, 'port-unreachable', 0)).toBeNull();
    // An echo request is not an error: it may get one.
    const echo = ipv4(VM1, 0x0808_0808, 1, encodeIcmpv4({ kind: 'echo-request', id: 1, seq: 1, data: Buffer.alloc(4) }));
    expect(s.errorV4(ethOf(eth4(echo)), echo, 'admin-prohibited', 0)).not.toBeNull();
    expect(s.stats).toMatchObject({ errorsSuppressed: 5, errorsSent: 1 });
  });

  it('rate-limits errors with the token bucket', () => {
    const s = new IcmpService(net, { errorRate: 1, errorBurst: 2 });
    const pkt = udp4(VM1, 0x0808_0808);
    const e = ethOf(eth4(pkt));
    expect([0, 1, 2].map((t) => s.errorV4(e, pkt, 'port-unreachable', t) !== null)).toEqual([true, true, false]);
    expect(s.errorV4(e, pkt, 'port-unreachable', 1100)).not.toBeNull();
    expect(s.stats.errorsRateLimited).toBe(1);
  });

  it('builds ICMPv6 errors with the right source scope, and not about multicast or ICMPv6 errors', () => {
    const s = new IcmpService(net);
    const udp = (src: Buffer, dst: Buffer): Buffer => ipv6(src, dst, 17, encodeUdp({ srcPort: 1, dstPort: 9, payload: Buffer.alloc(8) }, { version: 6, src, dst }));
    const g = udp(VM1_GLOBAL, v6('2001:db8::1'));
    const r = dissect(s.errorV6(ethOf(eth6(g)), g, 'port-unreachable', 0)!);
    if (r.kind !== 'ipv6') throw new Error();
    expect(r.ip.src).toEqual(GLOBAL_GW);
    expect(r.ip.dst).toEqual(VM1_GLOBAL);
    expect(r.icmp).toEqual({ kind: 'dest-unreachable', code: 4, original: g });
    const ll = udp(VM1_LL, v6('fe80::99'));
    const r2 = dissect(s.errorV6(ethOf(eth6(ll)), ll, 'admin-prohibited', 0)!);
    expect(r2.kind === 'ipv6' && r2.ip.src).toEqual(LL_GW);
    expect(r2.kind === 'ipv6' && r2.icmp).toMatchObject({ kind: 'dest-unreachable', code: 1 });

    const mcast = udp(VM1_GLOBAL, v6('ff02::fb'));
    expect(s.errorV6(ethOf(eth6(mcast, 0x3333_0000_00fb)), mcast, 'port-unreachable', 0)).toBeNull();
    // Packet Too Big is the exception (RFC 4443 §2.4(e.3)).
    const ptb = dissect(s.errorV6(ethOf(eth6(mcast, 0x3333_0000_00fb)), mcast, 'packet-too-big', 0, { mtu: 1400 })!);
    expect(ptb.kind === 'ipv6' && ptb.icmp).toMatchObject({ kind: 'packet-too-big', mtu: 1400 });
    const err = icmp6(VM1_GLOBAL, v6('2001:db8::1'), { kind: 'dest-unreachable', code: 4, original: Buffer.alloc(48) });
    expect(s.errorV6(ethOf(eth6(err)), err, 'port-unreachable', 0)).toBeNull();
    const hop = dissect(s.errorV6(ethOf(eth6(g)), g, 'hop-limit-exceeded', 0)!);
    expect(hop.kind === 'ipv6' && hop.icmp?.kind).toBe('time-exceeded');
  });
});
