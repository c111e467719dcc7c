import { describe, expect, it } from 'vitest';
import { dissect } from '../../daemon/gateway/dissect.js';
import { NdpService, NDP_OPT_DNSSL } from '../../daemon/gateway/ndp.js';
import { makeGatewayNet } from '../../daemon/gateway/types.js';
import { encodeEthernet, ETHERTYPE_IPV6 } from '../../daemon/wire/ethernet.js';
import { encodeIcmpv6, findNdpOption, type Icmpv6Init, type Icmpv6Message } from '../../daemon/wire/icmpv6.js';
import { encodeIpv6, ipv6MulticastMac, ipv6SolicitedNode, type Ipv6Packet } from '../../daemon/wire/ipv6.js';
import { parseIpv6Text } from '../../daemon/wire/ip-text.js';

const GW_MAC = 0x5254_0000_00fe;
const MAC1 = 0x5254_0000_0001;
const v6 = (s: string): Buffer => {
  const r = parseIpv6Text(s);
  if (!r.ok) throw new Error(s);
  return r.value;
};
const net = makeGatewayNet({ name: 'lan', subnet: '10.1.0.0/24', gatewayIp: '10.1.0.1', gatewayMac: GW_MAC, ipv6: 'fd00:1::/64', mtu: 1400 });
const LL_GW = v6('fe80::5054:ff:fe00:fe');
const GLOBAL_GW = v6('fd00:1::1');
const VM1_LL = v6('fe80::5054:ff:fe00:1');
const VM2_GLOBAL = v6('fd00:1::5054:ff:fe00:2');
const UNSPEC = Buffer.alloc(16);
const ALL_NODES = v6('ff02::1');
const ALL_ROUTERS = v6('ff02::2');

function frame(src: Buffer, dst: Buffer, m: Icmpv6Init, hopLimit = 255, ethSrc = MAC1): Buffer {
  const payload = encodeIcmpv6(m, { version: 6, src, dst });
  const ip = encodeIpv6({ trafficClass: 0, flowLabel: 0, hopLimit, src, dst, protocol: 58, payload });
  return encodeEthernet({ dst: dst[0] === 0xff ? ipv6MulticastMac(dst) : GW_MAC, src: ethSrc, etherType: ETHERTYPE_IPV6, payload: ip });
}

function handle(s: NdpService, f: Buffer, now = 0): Buffer[] {
  const d = dissect(f);
  if (d.kind !== 'ipv6' || !d.icmp) throw new Error(`bad test frame ${d.kind}`);
  return s.handle(d.eth, d.ip, d.icmp, now);
}

function parsed(f: Buffer): { ethDst: number; ethSrc: number; ip: Ipv6Packet; icmp: Icmpv6Message } {
  const d = dissect(f);
  if (d.kind !== 'ipv6' || !d.icmp) throw new Error('not ICMPv6');
  return { ethDst: d.eth.dst, ethSrc: d.eth.src, ip: d.ip, icmp: d.icmp };
}

const ns = (target: Buffer, sll = true): Icmpv6Init => ({ kind: 'neighbor-solicitation', target, options: sll ? [{ kind: 'source-ll', mac: MAC1 }] : [] });

describe('gateway NDP', () => {
  it('advertises the gateway link-local address to a multicast NS', () => {
    const s = new NdpService(net);
    const out = handle(s, frame(VM1_LL, ipv6SolicitedNode(LL_GW), ns(LL_GW)));
    expect(out).toHaveLength(1);
    const r = parsed(out[0]!);
    expect(r.ethDst).toBe(MAC1);
    expect(r.ethSrc).toBe(GW_MAC);
    expect(r.ip.src).toEqual(LL_GW);
    expect(r.ip.dst).toEqual(VM1_LL);
    expect(r.ip.hopLimit).toBe(255);
    expect(r.icmp).toEqual({ kind: 'neighbor-advertisement', router: true, solicited: true, override: true, target: LL_GW, options: [{ kind: 'target-ll', mac: GW_MAC }] });
  });

  it('advertises the global gateway address to a unicast NS (NUD)', () => {
    const s = new NdpService(net);
    const out = handle(s, frame(VM2_GLOBAL, GLOBAL_GW, ns(GLOBAL_GW)));
    const r = parsed(out[0]!);
    expect(r.icmp).toMatchObject({ kind: 'neighbor-advertisement', solicited: true, target: GLOBAL_GW });
    expect(r.ip.dst).toEqual(VM2_GLOBAL);
  });

  it('never answers solicitations or DAD for VMs\' addresses', () => {
    const s = new NdpService(net);
    expect(handle(s, frame(VM1_LL, ipv6SolicitedNode(VM2_GLOBAL), ns(VM2_GLOBAL)))).toEqual([]);
    expect(handle(s, frame(UNSPEC, ipv6SolicitedNode(VM2_GLOBAL), ns(VM2_GLOBAL, false)))).toEqual([]);
    expect(handle(s, frame(UNSPEC, ipv6SolicitedNode(VM1_LL), ns(VM1_LL, false)))).toEqual([]);
    expect(s.stats.notForUs).toBe(3);
  });

  it('defends the gateway address against DAD with an NA to all-nodes', () => {
    const s = new NdpService(net);
    const out = handle(s, frame(UNSPEC, ipv6SolicitedNode(GLOBAL_GW), ns(GLOBAL_GW, false)));
    const r = parsed(out[0]!);
    expect(r.ethDst).toBe(0x3333_0000_0001);
    expect(r.ip.dst).toEqual(ALL_NODES);
    expect(r.icmp).toMatchObject({ kind: 'neighbor-advertisement', solicited: false, override: true, target: GLOBAL_GW });
    expect(s.stats.dadDefended).toBe(1);
  });

  it('drops solicitations that fail RFC 4861 validation', () => {
    const s = new NdpService(net);
    expect(handle(s, frame(VM1_LL, ipv6SolicitedNode(LL_GW), ns(LL_GW), 64))).toEqual([]); // hop limit
    expect(handle(s, frame(UNSPEC, ipv6SolicitedNode(LL_GW), ns(LL_GW, true)))).toEqual([]); // DAD with source-ll
    expect(handle(s, frame(UNSPEC, LL_GW, ns(LL_GW, false)))).toEqual([]); // DAD not to solicited-node
    expect(handle(s, frame(VM1_LL, GLOBAL_GW, ns(LL_GW)))).toEqual([]); // unicast to another address
    expect(s.stats.invalid).toBe(4);
  });

  it('answers a Router Solicitation with a unicast RA carrying prefix, MTU, SLLA, RDNSS and DNSSL', () => {
    const s = new NdpService(net);
    const out = handle(s, frame(VM1_LL, ALL_ROUTERS, { kind: 'router-solicitation', options: [{ kind: 'source-ll', mac: MAC1 }] }));
    expect(out).toHaveLength(1);
    const r = parsed(out[0]!);
    expect(r.ethDst).toBe(MAC1);
    expect(r.ip.src).toEqual(LL_GW);
    expect(r.ip.dst).toEqual(VM1_LL);
    expect(r.ip.hopLimit).toBe(255);
    if (r.icmp.kind !== 'router-advertisement') throw new Error(r.icmp.kind);
    const ra = r.icmp;
    expect(ra).toMatchObject({ curHopLimit: 64, managed: false, otherConfig: false, routerLifetime: 1800 });
    expect(ra.routerLifetime).toBeGreaterThan(0);
    expect(findNdpOption(ra.options, 'source-ll')?.mac).toBe(GW_MAC);
    expect(findNdpOption(ra.options, 'mtu')?.mtu).toBe(1400);
    expect(findNdpOption(ra.options, 'prefix')).toEqual({
      kind: 'prefix',
      prefixLength: 64,
      onLink: true,
      autonomous: true,
      validLifetime: 86400,
      preferredLifetime: 14400,
      prefix: v6('fd00:1::'),
    });
    expect(findNdpOption(ra.options, 'rdnss')).toEqual({ kind: 'rdnss', lifetime: 1800, servers: [GLOBAL_GW] });
    const dnssl = ra.options.find((o) => o.kind === 'other' && o.type === NDP_OPT_DNSSL);
    expect(dnssl && dnssl.kind === 'other' && dnssl.data.readUInt32BE(2)).toBe(1800);
    // The name in wire form, its root label, then zero padding to a multiple of 8 (option of 24 bytes).
    expect(dnssl && dnssl.kind === 'other' && dnssl.data.subarray(6).toString('latin1')).toBe('\x03lan\x05mvnet' + '\x00'.repeat(6));
  });

  it('answers an RS from :: with a multicast RA, at most one per 3 s; the deferred one comes from poll', () => {
    const s = new NdpService(net, { random: () => 0 });
    const rs = frame(UNSPEC, ALL_ROUTERS, { kind: 'router-solicitation', options: [] });
    const first = handle(s, rs, 10_000);
    expect(first).toHaveLength(1);
    expect(parsed(first[0]!).ip.dst).toEqual(ALL_NODES);
    expect(parsed(first[0]!).ethDst).toBe(0x3333_0000_0001);
    expect(handle(s, rs, 11_000)).toEqual([]);
    expect(s.stats.deferred).toBe(1);
    expect(s.nextDeadline()).toBe(13_000);
    expect(s.poll(12_999)).toEqual([]);
    expect(s.poll(13_000)).toHaveLength(1);
  });

  it('rejects an RS with a bad hop limit or a source-ll option from ::', () => {
    const s = new NdpService(net);
    expect(handle(s, frame(VM1_LL, ALL_ROUTERS, { kind: 'router-solicitation', options: [] }, 1))).toEqual([]);
    expect(handle(s, frame(UNSPEC, ALL_ROUTERS, { kind: 'router-solicitation', options: [{ kind: 'source-ll', mac: MAC1 }] }))).toEqual([]);
    expect(s.stats.invalid).toBe(2);
  });

  it('sends unsolicited RAs: three quickly (<= 16 s apart), then every 200..600 s', () => {
    let x = 0.5;
    const s = new NdpService(net, { random: () => x });
    expect(s.nextDeadline()).toBe(0);
    let now = 5000;
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const out = s.poll(now);
      expect(out).toHaveLength(1);
      expect(parsed(out[0]!).icmp.kind).toBe('router-advertisement');
      times.push(now);
      expect(s.poll(now + 1)).toEqual([]);
      now = s.nextDeadline();
    }
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps.slice(0, 3)).toEqual([16_000, 16_000, 16_000]);
    expect(gaps[3]).toBe(400_000); // 200 s + 0.5 * 400 s
    x = 0.999;
    s.poll(now);
    expect(s.nextDeadline() - now).toBeLessThanOrEqual(600_000);
    expect(s.nextDeadline() - now).toBeGreaterThanOrEqual(200_000);
  });

  it('does not mark a non-/64 prefix autonomous, and needs a prefix at all', () => {
    const n56 = makeGatewayNet({ name: 'x', subnet: '10.2.0.0/24', gatewayIp: '10.2.0.1', gatewayMac: GW_MAC, ipv6: 'fd00:2::/56' });
    const ra = parsed(new NdpService(n56).routerAdvertisement()).icmp;
    expect(ra.kind === 'router-advertisement' && findNdpOption(ra.options, 'prefix')).toMatchObject({ prefixLength: 56, autonomous: false, onLink: true });
    const v4only = makeGatewayNet({ name: 'x', subnet: '10.2.0.0/24', gatewayIp: '10.2.0.1', gatewayMac: GW_MAC });
    expect(() => new NdpService(v4only)).toThrow(RangeError);
  });
});
