/**
 * Builders for the complete Ethernet frames the gateway sends, each emitted into one Buffer with
 * the wire codecs. Frames shorter than the Ethernet minimum (60 bytes without FCS) are
 * zero-padded; the IP length fields say where the packet ends.
 */
import { emitArp, ARP_LEN, type ArpPacket } from '../wire/arp.js';
import { emitEthernetHeader, ETH_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6 } from '../wire/ethernet.js';
import { emitIcmpv4, icmpv4Length, type Icmpv4Init } from '../wire/icmpv4.js';
import { emitIcmpv6, icmpv6Length, type Icmpv6Init } from '../wire/icmpv6.js';
import { emitIpv4Header, IPPROTO_ICMP, IPPROTO_UDP, IPV4_MIN_HEADER_LEN } from '../wire/ipv4.js';
import { emitIpv6Header, IPV6_HEADER_LEN, IPV6_NH_ICMPV6 } from '../wire/ipv6.js';
import type { Mac } from '../wire/mac.js';
import { emitUdp, UDP_HEADER_LEN } from '../wire/udp.js';

export const ETH_MIN_FRAME = 60;
export const DEFAULT_TTL = 64;

function alloc(length: number): Buffer {
  return Buffer.alloc(Math.max(ETH_MIN_FRAME, length));
}

let ipv4Id = Math.floor(Math.random() * 0x10000);

function nextIpv4Id(): number {
  ipv4Id = (ipv4Id + 1) & 0xffff;
  return ipv4Id;
}

export interface L2Addresses {
  readonly srcMac: Mac;
  readonly dstMac: Mac;
}

export function arpFrame(l2: L2Addresses, arp: ArpPacket): Buffer {
  const buf = alloc(ETH_HEADER_LEN + ARP_LEN);
  emitEthernetHeader({ src: l2.srcMac, dst: l2.dstMac, etherType: ETHERTYPE_ARP }, buf, 0);
  emitArp(arp, buf, ETH_HEADER_LEN);
  return buf;
}

export interface Ipv4Addresses extends L2Addresses {
  readonly src: number;
  readonly dst: number;
  /** Default 64. */
  readonly ttl?: number | undefined;
}

function ipv4Header(a: Ipv4Addresses, protocol: number, payloadLength: number, buf: Buffer): void {
  emitEthernetHeader({ src: a.srcMac, dst: a.dstMac, etherType: ETHERTYPE_IPV4 }, buf, 0);
  emitIpv4Header(
    { dscp: 0, ecn: 0, id: nextIpv4Id(), dontFragment: false, moreFragments: false, fragmentOffset: 0, ttl: a.ttl ?? DEFAULT_TTL, protocol, src: a.src, dst: a.dst },
    payloadLength,
    buf,
    ETH_HEADER_LEN,
  );
}

export function ipv4UdpFrame(a: Ipv4Addresses, srcPort: number, dstPort: number, payload: Uint8Array): Buffer {
  const udpLen = UDP_HEADER_LEN + payload.length;
  const off = ETH_HEADER_LEN + IPV4_MIN_HEADER_LEN;
  const buf = alloc(off + udpLen);
  ipv4Header(a, IPPROTO_UDP, udpLen, buf);
  emitUdp({ srcPort, dstPort, payload }, { version: 4, src: a.src, dst: a.dst }, buf, off);
  return buf;
}

export function ipv4IcmpFrame(a: Ipv4Addresses, m: Icmpv4Init): Buffer {
  const len = icmpv4Length(m);
  const off = ETH_HEADER_LEN + IPV4_MIN_HEADER_LEN;
  const buf = alloc(off + len);
  ipv4Header(a, IPPROTO_ICMP, len, buf);
  emitIcmpv4(m, buf, off);
  return buf;
}

export interface Ipv6Addresses extends L2Addresses {
  readonly src: Uint8Array;
  readonly dst: Uint8Array;
  /** Default 64; NDP messages use 255. */
  readonly hopLimit?: number | undefined;
}

function ipv6Header(a: Ipv6Addresses, nextHeader: number, payloadLength: number, buf: Buffer): void {
  emitEthernetHeader({ src: a.srcMac, dst: a.dstMac, etherType: ETHERTYPE_IPV6 }, buf, 0);
  emitIpv6Header({ trafficClass: 0, flowLabel: 0, hopLimit: a.hopLimit ?? DEFAULT_TTL, src: a.src, dst: a.dst, nextHeader }, payloadLength, buf, ETH_HEADER_LEN);
}

export function ipv6UdpFrame(a: Ipv6Addresses, srcPort: number, dstPort: number, payload: Uint8Array): Buffer {
  const udpLen = UDP_HEADER_LEN + payload.length;
  const off = ETH_HEADER_LEN + IPV6_HEADER_LEN;
  const buf = alloc(off + udpLen);
  ipv6Header(a, IPPROTO_UDP, udpLen, buf);
  emitUdp({ srcPort, dstPort, payload }, { version: 6, src: a.src, dst: a.dst }, buf, off);
  return buf;
}

export function ipv6IcmpFrame(a: Ipv6Addresses, m: Icmpv6Init): Buffer {
  const len = icmpv6Length(m);
  const off = ETH_HEADER_LEN + IPV6_HEADER_LEN;
  const buf = alloc(off + len);
  ipv6Header(a, IPV6_NH_ICMPV6, len, buf);
  emitIcmpv6(m, { version: 6, src: a.src, dst: a.dst }, buf, off);
  return buf;
}

/** ff02::1, all nodes. */
export const IPV6_ALL_NODES = Buffer.from('ff020000000000000000000000000001', 'hex');
/** ff02::2, all routers. */
export const IPV6_ALL_ROUTERS = Buffer.from('ff020000000000000000000000000002', 'hex');
export const IPV6_UNSPECIFIED = Buffer.alloc(16);

export function isIpv6Unspecified(addr: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (addr[i] !== 0) return false;
  return true;
}
