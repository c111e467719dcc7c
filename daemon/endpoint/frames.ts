/**
 * Frames the endpoint sends to a VM: Ethernet from the gateway MAC, IP from the flow's remote
 * address, and the transport header with its checksum. One allocation per frame, payload copied
 * once into it.
 */
import { emitIpv4Header, IPPROTO_TCP, IPPROTO_UDP } from '../wire/ipv4.js';
import { emitIpv6Header } from '../wire/ipv6.js';
import { emitTcpHeader, finishTcpChecksum, tcpOptionsLength, type TcpOptions } from '../wire/tcp.js';
import { emitUdpHeader, finishUdpChecksum } from '../wire/udp.js';
import { writeMac } from '../wire/mac.js';
import type { IpPseudo } from '../wire/checksum.js';
import type { IpAddr } from './addr.js';
import type { Segment } from './tcp/index.js';

const ETH = 14;
let ipId = 1;

export interface L2 {
  readonly vmMac: number;
  readonly gwMac: number;
}

function ethernet(buf: Buffer, l2: L2, v: 4 | 6): void {
  writeMac(buf, 0, l2.vmMac);
  writeMac(buf, 6, l2.gwMac);
  buf.writeUInt16BE(v === 4 ? 0x0800 : 0x86dd, 12);
}

function ipHeader(buf: Buffer, src: IpAddr, dst: IpAddr, proto: number, len: number): { hl: number; pseudo: IpPseudo } {
  if (src.v === 4 && dst.v === 4) {
    ipId = (ipId + 1) & 0xffff;
    const hl = emitIpv4Header(
      { dscp: 0, ecn: 0, id: ipId, dontFragment: true, moreFragments: false, fragmentOffset: 0, ttl: 64, protocol: proto, src: src.n, dst: dst.n },
      len,
      buf,
      ETH,
    );
    return { hl, pseudo: { version: 4, src: src.n, dst: dst.n } };
  }
  if (src.v === 6 && dst.v === 6) {
    const hl = emitIpv6Header({ trafficClass: 0, flowLabel: 0, hopLimit: 64, src: src.b, dst: dst.b, nextHeader: proto }, len, buf, ETH);
    return { hl, pseudo: { version: 6, src: src.b, dst: dst.b } };
  }
  throw new RangeError('mixed IP versions');
}

function tcpOptions(seg: Segment): TcpOptions | undefined {
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

export function tcpFrame(l2: L2, src: IpAddr, srcPort: number, dst: IpAddr, dstPort: number, seg: Segment): Buffer {
  const options = tcpOptions(seg);
  const thl = 20 + tcpOptionsLength(options);
  const tlen = thl + seg.payload.length;
  const ihl = src.v === 4 ? 20 : 40;
  const buf = Buffer.allocUnsafe(ETH + ihl + tlen);
  ethernet(buf, l2, src.v);
  const { hl, pseudo } = ipHeader(buf, src, dst, IPPROTO_TCP, tlen);
  const off = ETH + hl;
  emitTcpHeader({ srcPort, dstPort, seq: seg.seq, ack: seg.ack, flags: seg.flags, window: seg.window, options }, buf, off);
  seg.payload.copy(buf, off + thl);
  finishTcpChecksum(buf, off, tlen, pseudo);
  return buf;
}

export function udpFrame(l2: L2, src: IpAddr, srcPort: number, dst: IpAddr, dstPort: number, payload: Uint8Array): Buffer {
  const ulen = 8 + payload.length;
  const ihl = src.v === 4 ? 20 : 40;
  const buf = Buffer.allocUnsafe(ETH + ihl + ulen);
  ethernet(buf, l2, src.v);
  const { hl, pseudo } = ipHeader(buf, src, dst, IPPROTO_UDP, ulen);
  const off = ETH + hl;
  emitUdpHeader(srcPort, dstPort, payload.length, buf, off);
  buf.set(payload, off + 8);
  finishUdpChecksum(buf, off, ulen, pseudo);
  return buf;
}

/** An IP packet (header included) wrapped for the VM, e.g. an ICMP error built elsewhere. */
export function ipFrame(l2: L2, v: 4 | 6, packet: Uint8Array): Buffer {
  const buf = Buffer.allocUnsafe(ETH + packet.length);
  ethernet(buf, l2, v);
  buf.set(packet, ETH);
  return buf;
}
