import { describe, expect, it } from 'vitest';
import { dissect } from '../../daemon/gateway/dissect.js';
import { LocalZone, NoneResolver } from '../../daemon/gateway/dns-local.js';
import { GatewayServices } from '../../daemon/gateway/services.js';
import { eui64LinkLocal, inSubnet, isGatewayIpv6, makeGatewayNet, prefixMask } from '../../daemon/gateway/types.js';
import { ARP_REQUEST, encodeArp } from '../../daemon/wire/arp.js';
import { BOOTREQUEST, DHCPDISCOVER, DHCPOFFER, encodeDhcpv4, parseDhcpv4 } from '../../daemon/wire/dhcpv4.js';
import { encodeDns, parseDns } from '../../daemon/wire/dns.js';
import { encodeEthernet, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6 } from '../../daemon/wire/ethernet.js';
import { encodeIcmpv4 } from '../../daemon/wire/icmpv4.js';
import { encodeIcmpv6 } from '../../daemon/wire/icmpv6.js';
import { encodeIpv4 } from '../../daemon/wire/ipv4.js';
import { encodeIpv6, ipv6SolicitedNode } from '../../daemon/wire/ipv6.js';
import { formatIpv6, parseIpv6Text } from '../../daemon/wire/ip-text.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';
import { encodeUdp } from '../../daemon/wire/udp.js';

const GW_MAC = 0x5254_0012_3456;
const MAC1 = 0x5254_0000_0001;
const GW = 0x0a01_0001;
const VM1 = 0x0a01_0002;

describe('makeGatewayNet', () => {
  it('derives mask, broadcast, EUI-64 link-local and prefix::1, default domain and lease time', () => {
    const n = makeGatewayNet({ name: 'lan', subnet: '10.1.0.0/24', gatewayIp: '10.1.0.1', gatewayMac: GW_MAC, ipv6: 'fd00:1:2:3:ffff::/64' });
    expect(n).toMatchObject({ mask: 0xffffff00, broadcast: 0x0a01_00ff, gatewayIp: GW, mtu: 1500, domain: 'lan.mvnet', leaseTime: 3600 });
    expect(formatIpv6(n.ipv6!.linkLocal)).toBe('fe80::5054:ff:fe12:3456');
    expect(formatIpv6(n.ipv6!.prefix)).toBe('fd00:1:2:3::');
    expect(formatIpv6(n.ipv6!.global)).toBe('fd00:1:2:3::1');
    expect(isGatewayIpv6(n, n.ipv6!.global)).toBe(true);
    expect(isGatewayIpv6(n, eui64LinkLocal(MAC1))).toBe(false);
    expect(prefixMask(0)).toBe(0);
    expect(prefixMask(32)).toBe(0xffffffff);
    expect(inSubnet(0x0a01_0063, n.subnet)).toBe(true);
    expect(inSubnet(0x0a02_0001, n.subnet)).toBe(false);
  });

  it('rejects impossible networks', () => {
    const base = { name: 'lan', subnet: '10.1.0.0/24', gatewayIp: '10.1.0.1', gatewayMac: GW_MAC };
    expect(() => makeGatewayNet({ ...base, subnet: '10.1.0.5/24' })).toThrow(RangeError);
    expect(() => makeGatewayNet({ ...base, gatewayIp: '10.2.0.1' })).toThrow(RangeError);
    expect(() => makeGatewayNet({ ...base, gatewayIp: '10.1.0.255' })).toThrow(RangeError);
    expect(() => makeGatewayNet({ ...base, gatewayMac: MAC_BROADCAST })).toThrow(RangeError);
    expect(() => makeGatewayNet({ ...base, ipv6: 'fd00::/128' })).toThrow(RangeError);
    expect(() => makeGatewayNet({ ...base, domain: 'bad_domain' })).toThrow(RangeError);
    expect(() => makeGatewayNet({ ...base, mtu: 100 })).toThrow(RangeError);
  });
});

describe('GatewayServices', () => {
  const net = makeGatewayNet({ name: 'lan', subnet: '10.1.0.0/24', gatewayIp: GW, gatewayMac: GW_MAC, ipv6: 'fd00:1::/64' });
  const make = (): GatewayServices => new GatewayServices(net, { resolver: new NoneResolver(new LocalZone(net)), ndp: { random: () => 0 } });
  const ip4 = (src: number, dst: number, protocol: number, payload: Buffer): Buffer =>
    encodeIpv4({ dscp: 0, ecn: 0, id: 1, dontFragment: false, moreFragments: false, fragmentOffset: 0, ttl: 64, protocol, src, dst, payload });

  it('dispatches ARP, DHCP, ping and DNS to the services and leaves the rest to the router', async () => {
    const g = make();
    const arp = encodeEthernet({ dst: MAC_BROADCAST, src: MAC1, etherType: ETHERTYPE_ARP, payload: encodeArp({ op: ARP_REQUEST, senderMac: MAC1, senderIp: VM1, targetMac: 0, targetIp: GW }) });
    const r1 = g.input(arp, 'vm1', 0);
    expect(r1.handled).toBe(true);
    expect(dissect(r1.replies[0]!).kind).toBe('arp');

    const dhcp = encodeDhcpv4({ op: BOOTREQUEST, xid: 9, clientMac: MAC1, options: { messageType: DHCPDISCOVER } });
    const f2 = encodeEthernet({ dst: MAC_BROADCAST, src: MAC1, etherType: ETHERTYPE_IPV4, payload: ip4(0, 0xffffffff, 17, encodeUdp({ srcPort: 68, dstPort: 67, payload: dhcp }, { version: 4, src: 0, dst: 0xffffffff })) });
    const r2 = g.input(f2, 'vm1', 0);
    const offer = dissect(r2.replies[0]!);
    expect(offer.kind === 'ipv4' && offer.udp && parseDhcpv4(offer.udp.payload).ok).toBe(true);
    if (offer.kind === 'ipv4' && offer.udp) {
      const m = parseDhcpv4(offer.udp.payload);
      expect(m.ok && m.value.options.messageType).toBe(DHCPOFFER);
    }

    const ping = encodeEthernet({ dst: GW_MAC, src: MAC1, etherType: ETHERTYPE_IPV4, payload: ip4(VM1, GW, 1, encodeIcmpv4({ kind: 'echo-request', id: 1, seq: 1, data: Buffer.alloc(4) })) });
    const r3 = g.input(ping, 'vm1', 0);
    const echo = dissect(r3.replies[0]!);
    expect(echo.kind === 'ipv4' && echo.icmp?.kind).toBe('echo-reply');

    const q = encodeDns({ id: 5, qr: false, opcode: 0, aa: false, tc: false, rd: true, ra: false, ad: false, cd: false, rcode: 0, questions: [{ name: 'gateway.lan.mvnet', type: 1, class: 1 }], answers: [], authorities: [], additionals: [] });
    const dns = encodeEthernet({ dst: GW_MAC, src: MAC1, etherType: ETHERTYPE_IPV4, payload: ip4(VM1, GW, 17, encodeUdp({ srcPort: 4444, dstPort: 53, payload: q }, { version: 4, src: VM1, dst: GW })) });
    const r4 = g.input(dns, 'vm1', 0);
    expect(r4.handled).toBe(true);
    expect(r4.replies).toEqual([]);
    const resp = dissect((await r4.later)!);
    expect(resp.kind === 'ipv4' && resp.udp && parseDns(resp.udp.payload).ok).toBe(true);

    // Traffic to elsewhere, and a ping to another VM, are the router's.
    const out = encodeEthernet({ dst: GW_MAC, src: MAC1, etherType: ETHERTYPE_IPV4, payload: ip4(VM1, 0x0808_0808, 17, encodeUdp({ srcPort: 4444, dstPort: 53, payload: q }, { version: 4, src: VM1, dst: 0x0808_0808 })) });
    expect(g.input(out, 'vm1', 0)).toEqual({ handled: false, replies: [] });
    const ping2 = encodeEthernet({ dst: GW_MAC, src: MAC1, etherType: ETHERTYPE_IPV4, payload: ip4(VM1, 0x0a01_0003, 1, encodeIcmpv4({ kind: 'echo-request', id: 1, seq: 1, data: Buffer.alloc(4) })) });
    expect(g.input(ping2, 'vm1', 0).handled).toBe(false);
  });

  it('answers NDP for the gateway and schedules RAs and lease expiry', () => {
    const g = make();
    const v6 = (s: string): Buffer => {
      const r = parseIpv6Text(s);
      if (!r.ok) throw new Error(s);
      return r.value;
    };
    const src = eui64LinkLocal(MAC1);
    const dst = ipv6SolicitedNode(net.ipv6!.global);
    const ns = encodeIcmpv6({ kind: 'neighbor-solicitation', target: net.ipv6!.global, options: [{ kind: 'source-ll', mac: MAC1 }] }, { version: 6, src, dst });
    const f = encodeEthernet({ dst: 0x3333_ff00_0001, src: MAC1, etherType: ETHERTYPE_IPV6, payload: encodeIpv6({ trafficClass: 0, flowLabel: 0, hopLimit: 255, src, dst, protocol: 58, payload: ns }) });
    const r = g.input(f, 'vm1', 0);
    expect(r.handled).toBe(true);
    const na = dissect(r.replies[0]!);
    expect(na.kind === 'ipv6' && na.icmp?.kind).toBe('neighbor-advertisement');
    // A solicitation for a VM's address is not ours.
    const other = v6('fd00:1::99');
    const ns2 = encodeIcmpv6({ kind: 'neighbor-solicitation', target: other, options: [] }, { version: 6, src, dst: ipv6SolicitedNode(other) });
    const f2 = encodeEthernet({ dst: 0x3333_ff00_0099, src: MAC1, etherType: ETHERTYPE_IPV6, payload: encodeIpv6({ trafficClass: 0, flowLabel: 0, hopLimit: 255, src, dst: ipv6SolicitedNode(other), protocol: 58, payload: ns2 }) });
    expect(g.input(f2, 'vm1', 0)).toEqual({ handled: false, replies: [] });

    expect(g.nextDeadline()).toBe(0);
    expect(g.poll(1000)).toHaveLength(1);
    expect(g.nextDeadline()).toBe(1000 + 16_000);
  });
});
