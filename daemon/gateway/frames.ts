/**
 * The one builder of every frame the gateway and the endpoint send to VMs, each emitted into one
 * Buffer with the wire codecs: one IPv4 identification counter and one DF policy (DF set on
 * every packet that fits the network's MTU; a UDP datagram that does not, e.g. a large answer
 * from an outside resolver, is fragmented as a host would: `udpFrames`). Frames shorter than the Ethernet minimum (60 bytes without FCS) are zero-padded;
 * the IP length fields say where the packet ends.
 */
import { emitArp, ARP_LEN, type ArpPacket } from '../wire/arp.js';
import { emitEthernetHeader, ETH_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6 } from '../wire/ethernet.js';
import { emitIcmpv4, icmpv4Length, type Icmpv4Init } from '../wire/icmpv4.js';
import { emitIcmpv6, icmpv6Length, type Icmpv6Init } from '../wire/icmpv6.js';
import { emitIpv4Header, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_MIN_HEADER_LEN } from '../wire/ipv4.js';
import type { IpPseudo } from '../wire/checksum.js';
import { emitIpv6Header, IPV6_HEADER_LEN, IPV6_NH_FRAGMENT, IPV6_NH_ICMPV6 } from '../wire/ipv6.js';
import type { Mac } from '../wire/mac.js';
import { emitUdpHeader, finishUdpChecksum, UDP_HEADER_LEN } from '../wire/udp.js';
import { emitTcpHeader, finishTcpChecksum, tcpOptionsLength, type TcpOptions } from '../wire/tcp.js';
import { pseudoHeaderSum } from '../wire/checksum.js';
import {
  markVnetHeadroom,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  GSO_MAX_FRAME,
  VNET_HDR_LEN,
} from '../wire/vnet.js';
import type { IpAddr } from '../endpoint/addr.js';
import type { Segment } from '../endpoint/tcp/index.js';

export const ETH_MIN_FRAME = 60;
export const DEFAULT_TTL = 64;

function alloc(length: number): Buffer {
  return Buffer.alloc(Math.max(ETH_MIN_FRAME, length));
}

/**
 * For the data path: every byte up to `length` is written by the caller; only padding is zeroed.
 * Frames too large for Node's shared pool (jumbo MTUs) come from the frame slab instead of a new
 * ArrayBuffer each.
 */
function allocFilled(length: number): Buffer {
  if (length >= POOLED_MAX) {
    const b = reserveFrame(length);
    shrinkFrame(b, length);
    return b;
  }
  if (length >= ETH_MIN_FRAME) return Buffer.allocUnsafe(length);
  const buf = Buffer.allocUnsafe(ETH_MIN_FRAME);
  buf.fill(0, length);
  return buf;
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

function ipv4Header(a: Ipv4Addresses, protocol: number, payloadLength: number, buf: Buffer, frag?: { id: number; offset: number; more: boolean }): void {
  emitEthernetHeader({ src: a.srcMac, dst: a.dstMac, etherType: ETHERTYPE_IPV4 }, buf, 0);
  emitIpv4Header(
    {
      dscp: 0,
      ecn: 0,
      id: frag?.id ?? nextIpv4Id(),
      dontFragment: frag === undefined,
      moreFragments: frag?.more ?? false,
      fragmentOffset: frag?.offset ?? 0,
      ttl: a.ttl ?? DEFAULT_TTL,
      protocol,
      src: a.src,
      dst: a.dst,
    },
    payloadLength,
    buf,
    ETH_HEADER_LEN,
  );
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

/** The two MACs of a VM's flow: frames go from the gateway to the VM. */
export interface L2 {
  readonly vmMac: number;
  readonly gwMac: number;
}

/** Ethernet and IP headers for a flow's frame; returns the IP header length and the checksum pseudo-header. */
function flowHeaders(buf: Buffer, l2: L2, src: IpAddr, dst: IpAddr, proto: number, len: number): { hl: number; pseudo: IpPseudo } {
  if (src.v === 4 && dst.v === 4) {
    ipv4Header({ srcMac: l2.gwMac, dstMac: l2.vmMac, src: src.n, dst: dst.n }, proto, len, buf);
    return { hl: IPV4_MIN_HEADER_LEN, pseudo: { version: 4, src: src.n, dst: dst.n } };
  }
  if (src.v === 6 && dst.v === 6) {
    ipv6Header({ srcMac: l2.gwMac, dstMac: l2.vmMac, src: src.b, dst: dst.b }, proto, len, buf);
    return { hl: IPV6_HEADER_LEN, pseudo: { version: 6, src: src.b, dst: dst.b } };
  }
  throw new RangeError('mixed IP versions');
}

function tcpOptions(seg: Pick<Segment, 'options'>): TcpOptions | undefined {
  const o = seg.options;
  if (o.mss === undefined && o.wscale === undefined && o.sackPermitted === undefined && o.sack === undefined && o.ts === undefined) return undefined;
  return {
    mss: o.mss,
    windowScale: o.wscale,
    sackPermitted: o.sackPermitted,
    sack: o.sack?.map(([left, right]) => ({ left, right })),
    timestamp: o.ts !== undefined ? { value: o.ts[0], echo: o.ts[1] } : undefined,
  };
}

/** A TCP segment of a VM's flow, from the flow's remote end (`src`) to the VM (`dst`). */
export function tcpFrame(l2: L2, src: IpAddr, srcPort: number, dst: IpAddr, dstPort: number, seg: Segment): Buffer {
  const options = tcpOptions(seg);
  const thl = 20 + tcpOptionsLength(options);
  const tlen = thl + seg.payload.length;
  const off = ETH_HEADER_LEN + (src.v === 4 ? IPV4_MIN_HEADER_LEN : IPV6_HEADER_LEN);
  const buf = allocFilled(off + tlen);
  const { pseudo } = flowHeaders(buf, l2, src, dst, IPPROTO_TCP, tlen);
  emitTcpHeader({ srcPort, dstPort, seq: seg.seq, ack: seg.ack, flags: seg.flags, window: seg.window, options }, buf, off);
  seg.payload.copy(buf, off + thl);
  finishTcpChecksum(buf, off, tlen, pseudo);
  return buf;
}

/** A UDP datagram of a VM's flow, from the flow's remote end to the VM. */
export function udpFrame(l2: L2, src: IpAddr, srcPort: number, dst: IpAddr, dstPort: number, payload: Uint8Array): Buffer {
  const ulen = UDP_HEADER_LEN + payload.length;
  const off = ETH_HEADER_LEN + (src.v === 4 ? IPV4_MIN_HEADER_LEN : IPV6_HEADER_LEN);
  const buf = allocFilled(off + ulen);
  const { pseudo } = flowHeaders(buf, l2, src, dst, IPPROTO_UDP, ulen);
  emitUdpHeader(srcPort, dstPort, payload.length, buf, off);
  buf.set(payload, off + UDP_HEADER_LEN);
  finishUdpChecksum(buf, off, ulen, pseudo);
  return buf;
}

/**
 * A UDP datagram to the VM as frames no larger than `mtu` (the IP packet size): one frame when
 * it fits, else IPv4 fragments (RFC 791) or IPv6 Fragment headers (RFC 8200 §4.5). The checksum
 * covers the whole datagram, computed once before it is cut.
 */
export function udpFrames(l2: L2, src: IpAddr, srcPort: number, dst: IpAddr, dstPort: number, payload: Uint8Array, mtu: number): Buffer[] {
  const ihl = src.v === 4 ? IPV4_MIN_HEADER_LEN : IPV6_HEADER_LEN;
  if (ihl + UDP_HEADER_LEN + payload.length <= mtu) return [udpFrame(l2, src, srcPort, dst, dstPort, payload)];
  const whole = udpFrame(l2, src, srcPort, dst, dstPort, payload);
  const datagram = whole.subarray(ETH_HEADER_LEN + ihl);
  const out: Buffer[] = [];
  if (src.v === 4 && dst.v === 4) {
    const a = { srcMac: l2.gwMac, dstMac: l2.vmMac, src: src.n, dst: dst.n };
    const step = (mtu - IPV4_MIN_HEADER_LEN) & ~7;
    const id = nextIpv4Id();
    for (let off = 0; off < datagram.length; off += step) {
      const part = datagram.subarray(off, Math.min(off + step, datagram.length));
      const buf = allocFilled(ETH_HEADER_LEN + IPV4_MIN_HEADER_LEN + part.length);
      ipv4Header(a, IPPROTO_UDP, part.length, buf, { id, offset: off, more: off + part.length < datagram.length });
      part.copy(buf, ETH_HEADER_LEN + IPV4_MIN_HEADER_LEN);
      out.push(buf);
    }
    return out;
  }
  if (src.v === 6 && dst.v === 6) {
    const a = { srcMac: l2.gwMac, dstMac: l2.vmMac, src: src.b, dst: dst.b };
    const step = (mtu - IPV6_HEADER_LEN - FRAGMENT_HEADER_LEN) & ~7;
    const id = nextIpv6FragmentId();
    for (let off = 0; off < datagram.length; off += step) {
      const part = datagram.subarray(off, Math.min(off + step, datagram.length));
      const hdr = ETH_HEADER_LEN + IPV6_HEADER_LEN;
      const buf = allocFilled(hdr + FRAGMENT_HEADER_LEN + part.length);
      ipv6Header(a, IPV6_NH_FRAGMENT, FRAGMENT_HEADER_LEN + part.length, buf);
      buf[hdr] = IPPROTO_UDP;
      buf[hdr + 1] = 0;
      buf.writeUInt16BE(off | (off + part.length < datagram.length ? 1 : 0), hdr + 2);
      buf.writeUInt32BE(id, hdr + 4);
      part.copy(buf, hdr + FRAGMENT_HEADER_LEN);
      out.push(buf);
    }
    return out;
  }
  throw new RangeError('mixed IP versions');
}

const FRAGMENT_HEADER_LEN = 8;
let ipv6FragmentId = Math.floor(Math.random() * 0x1_0000_0000);

function nextIpv6FragmentId(): number {
  ipv6FragmentId = (ipv6FragmentId + 1) >>> 0;
  return ipv6FragmentId;
}

// --- offload frames to VMs with a virtio-net header ---------------------------------------------

/**
 * Frame memory for the endpoint's offload frames: a bump allocator over 1 MiB slabs instead of a
 * new ArrayBuffer per frame (at 64 KiB each, Buffer.allocUnsafe is a malloc and a GC external).
 * A slab is never reused: it goes when the last frame in it is written and dropped.
 */
const SLAB_SIZE = 1 << 20;
/** Buffer.allocUnsafe pools sizes below half its 8 KiB pool; larger ones are an ArrayBuffer each. */
const POOLED_MAX = Buffer.poolSize >>> 1;
let slab: Buffer = Buffer.allocUnsafeSlow(0);
let slabOff = 0;

/** A view of `max` bytes of fresh frame memory; `shrinkFrame` gives back what was not used. */
export function reserveFrame(max: number): Buffer {
  if (max > SLAB_SIZE) return Buffer.allocUnsafeSlow(max);
  if (slabOff + max > slab.length) {
    slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
    slabOff = 0;
  }
  const b = slab.subarray(slabOff, slabOff + max);
  slabOff += max;
  return b;
}

/** `frame` (the last reservation, if nothing was reserved since) keeps only `used` bytes. */
export function shrinkFrame(frame: Buffer, used: number): void {
  if (frame.buffer !== slab.buffer || frame.byteOffset - slab.byteOffset + frame.length !== slabOff) return;
  // Keep the next reservation 8-byte aligned (the checksum reads 32-bit words).
  slabOff = frame.byteOffset - slab.byteOffset + ((used + 7) & ~7);
}

/** The header fields of an offload frame (the payload is already in place). */
export interface TcpHead {
  readonly seq: number;
  readonly ack: number;
  readonly flags: number;
  readonly window: number;
  readonly options: Segment['options'];
}

/** Bytes before the payload of an offload frame: vnet header, Ethernet, IP and TCP headers. */
export function offloadTcpHeadroom(v: 4 | 6, head: Pick<Segment, 'options'>): number {
  return VNET_HDR_LEN + ETH_HEADER_LEN + (v === 4 ? IPV4_MIN_HEADER_LEN : IPV6_HEADER_LEN) + 20 + tcpOptionsLength(tcpOptions(head));
}

/**
 * Largest TCP payload of one offload frame: the IP length fields' limit, and the largest frame a
 * vnet-hdr port carries (an IPv6 frame within its 16-bit payload length would be up to 65,603
 * bytes, which the port refuses as oversize).
 */
export function maxOffloadPayload(v: 4 | 6, head: Pick<Segment, 'options'>): number {
  const thl = 20 + tcpOptionsLength(tcpOptions(head));
  const iphl = v === 4 ? IPV4_MIN_HEADER_LEN : IPV6_HEADER_LEN;
  return Math.min(0xffff - thl - (v === 4 ? IPV4_MIN_HEADER_LEN : 0), GSO_MAX_FRAME - ETH_HEADER_LEN - iphl - thl);
}

/**
 * Completes an offload frame in `buf`: the payload (`payloadLen` bytes) is already at
 * `offloadTcpHeadroom`; this writes the virtio_net_hdr, Ethernet, IP and TCP headers before it.
 * The TCP checksum is left to the VM's device (NEEDS_CSUM: the field holds the pseudo-header
 * sum, as Linux leaves it for CHECKSUM_PARTIAL); more than `gsoSize` bytes of payload make a GSO
 * frame (TCPV4/TCPV6) the VM's kernel takes whole, as from a NIC doing LRO. Returns the Ethernet
 * frame (without the header before it), marked as having the header in its headroom.
 */
export function offloadTcpFrame(buf: Buffer, l2: L2, src: IpAddr, srcPort: number, dst: IpAddr, dstPort: number, head: TcpHead, payloadLen: number, gsoSize: number): Buffer {
  const options = tcpOptions(head);
  const thl = 20 + tcpOptionsLength(options);
  const iphl = src.v === 4 ? IPV4_MIN_HEADER_LEN : IPV6_HEADER_LEN;
  const tlen = thl + payloadLen;
  const l4 = ETH_HEADER_LEN + iphl;
  const frameLen = l4 + tlen;
  const frame = buf.subarray(VNET_HDR_LEN, VNET_HDR_LEN + Math.max(ETH_MIN_FRAME, frameLen));
  if (frameLen < ETH_MIN_FRAME) frame.fill(0, frameLen);
  const { pseudo } = flowHeaders(frame, l2, src, dst, IPPROTO_TCP, tlen);
  emitTcpHeader({ srcPort, dstPort, seq: head.seq, ack: head.ack, flags: head.flags, window: head.window, options }, frame, l4);
  frame.writeUInt16BE(pseudoHeaderSum(pseudo, IPPROTO_TCP, tlen), l4 + 16);
  const gso = payloadLen > gsoSize;
  buf[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  buf[1] = gso ? (src.v === 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6) : VIRTIO_NET_HDR_GSO_NONE;
  buf.writeUInt16LE(l4 + thl, 2);
  buf.writeUInt16LE(gso ? gsoSize : 0, 4);
  buf.writeUInt16LE(l4, 6);
  buf.writeUInt16LE(16, 8);
  markVnetHeadroom(frame);
  return frame;
}
