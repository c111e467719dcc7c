/**
 * The one parse of a frame the gateway received: Ethernet, then ARP, or IPv4/IPv6 with UDP,
 * TCP or ICMP on top, each through the checked parse of wire/ with its checksum verified. The
 * router dispatches on the result and hands the same parsed headers on (to a gateway service or
 * to the endpoint); nothing parses the frame again. Everything returned is a view into `frame`.
 */
import { parseArp, type ArpPacket } from '../wire/arp.js';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, parseEthernet, type EthernetFrame } from '../wire/ethernet.js';
import { parseIcmpv4, type Icmpv4Message } from '../wire/icmpv4.js';
import { parseIcmpv6, type Icmpv6Message } from '../wire/icmpv6.js';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, parseIpv4, type Ipv4Packet } from '../wire/ipv4.js';
import { parseTcp, type TcpSegment } from '../wire/tcp.js';
import { IPV6_NH_ICMPV6, parseIpv6, type Ipv6Packet } from '../wire/ipv6.js';
import type { WireError } from '../wire/result.js';
import { parseUdp, type UdpDatagram } from '../wire/udp.js';
import { hasPartialCsum } from '../wire/vnet.js';

export type Dissected =
  | { readonly kind: 'arp'; readonly eth: EthernetFrame; readonly arp: ArpPacket }
  | { readonly kind: 'ipv4'; readonly eth: EthernetFrame; readonly ip: Ipv4Packet; readonly udp?: UdpDatagram | undefined; readonly tcp?: TcpSegment | undefined; readonly icmp?: Icmpv4Message | undefined }
  | { readonly kind: 'ipv6'; readonly eth: EthernetFrame; readonly ip: Ipv6Packet; readonly udp?: UdpDatagram | undefined; readonly tcp?: TcpSegment | undefined; readonly icmp?: Icmpv6Message | undefined }
  | { readonly kind: 'other'; readonly eth: EthernetFrame }
  | { readonly kind: 'invalid'; readonly error: WireError };

export function dissect(frame: Buffer): Dissected {
  const e = parseEthernet(frame);
  if (!e.ok) return { kind: 'invalid', error: e.error };
  const eth = e.value;
  switch (eth.etherType) {
    case ETHERTYPE_ARP: {
      const a = parseArp(eth.payload);
      return a.ok ? { kind: 'arp', eth, arp: a.value } : { kind: 'invalid', error: a.error };
    }
    case ETHERTYPE_IPV4: {
      const p = parseIpv4(eth.payload);
      if (!p.ok) return { kind: 'invalid', error: p.error };
      const ip = p.value;
      if (ip.moreFragments || ip.fragmentOffset !== 0) return { kind: 'ipv4', eth, ip };
      if (ip.protocol === IPPROTO_UDP) {
        const u = parseUdp(ip.payload, { version: 4, src: ip.src, dst: ip.dst });
        return u.ok ? { kind: 'ipv4', eth, ip, udp: u.value } : { kind: 'invalid', error: u.error };
      }
      if (ip.protocol === IPPROTO_TCP) {
        // A local VM's TSO or NEEDS_CSUM frame: its checksum was left to us (not verified).
        const t = parseTcp(ip.payload, hasPartialCsum(frame) ? undefined : { version: 4, src: ip.src, dst: ip.dst });
        return t.ok ? { kind: 'ipv4', eth, ip, tcp: t.value } : { kind: 'invalid', error: t.error };
      }
      if (ip.protocol === IPPROTO_ICMP) {
        const c = parseIcmpv4(ip.payload);
        return c.ok ? { kind: 'ipv4', eth, ip, icmp: c.value } : { kind: 'invalid', error: c.error };
      }
      return { kind: 'ipv4', eth, ip };
    }
    case ETHERTYPE_IPV6: {
      const p = parseIpv6(eth.payload);
      if (!p.ok) return { kind: 'invalid', error: p.error };
      const ip = p.value;
      if (ip.fragment !== undefined) return { kind: 'ipv6', eth, ip };
      const pseudo = { version: 6 as const, src: ip.src, dst: ip.dst };
      if (ip.protocol === IPPROTO_UDP) {
        const u = parseUdp(ip.payload, pseudo);
        return u.ok ? { kind: 'ipv6', eth, ip, udp: u.value } : { kind: 'invalid', error: u.error };
      }
      if (ip.protocol === IPPROTO_TCP) {
        const t = parseTcp(ip.payload, hasPartialCsum(frame) ? undefined : pseudo);
        return t.ok ? { kind: 'ipv6', eth, ip, tcp: t.value } : { kind: 'invalid', error: t.error };
      }
      if (ip.protocol === IPV6_NH_ICMPV6) {
        const c = parseIcmpv6(ip.payload, pseudo);
        return c.ok ? { kind: 'ipv6', eth, ip, icmp: c.value } : { kind: 'invalid', error: c.error };
      }
      return { kind: 'ipv6', eth, ip };
    }
    default:
      return { kind: 'other', eth };
  }
}
