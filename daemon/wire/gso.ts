/**
 * Software offload: turn what a VM hands us through a virtio-net header (TSO super-frames,
 * UFO datagrams, partial checksums) into plain Ethernet frames anybody can forward.
 *
 * `normalizeOffload` accepts exactly what Linux's `virtio_net_hdr_to_skb` accepts in spirit:
 *
 * - GSO_NONE without NEEDS_CSUM: a view of the frame is appended (no copy).
 * - GSO_NONE with NEEDS_CSUM: a copy of the frame is appended with the checksum from
 *   `csum_start` to the end of the frame folded into `csum_start + csum_offset` (the field holds
 *   the pseudo-header sum, as Linux leaves it). A zero result is written as 0xffff (as Linux's
 *   skb_checksum_help does, which keeps UDP's "no checksum" meaning out of the way).
 * - GSO_TCPV4 / GSO_TCPV6 (optionally | GSO_ECN): the payload after the Ethernet (one optional
 *   802.1Q tag), IP (IPv4 options / IPv6 hop-by-hop, routing and destination options are copied
 *   along) and TCP headers is cut into `gso_size` pieces. Each piece becomes a new Buffer with
 *   the headers copied; IPv4 total length, id (+1 per segment) and header checksum, or IPv6
 *   payload length, are fixed; the TCP sequence number advances by the bytes before it; FIN and
 *   PSH are kept only on the last segment and CWR only on the first; TCP checksums are computed
 *   from scratch over the pseudo-header. `hdr_len` is only a hint and is not trusted.
 * - GSO_UDP (UFO), IPv4 only: the UDP length and checksum are computed from scratch over the
 *   whole datagram, then the IP payload is cut into IPv4 fragments of `gso_size` rounded down
 *   to a multiple of 8 (Linux's UFO sets gso_size to the fragment payload size); all fragments
 *   share the IP id, carry MF except the last, and have DF cleared (a datagram that fits in one
 *   fragment goes out whole, DF kept). IPv4 options are copied into every fragment. UFO over IPv6 (it would need a fragment header inserted) returns -1.
 *
 * The input is never modified (a flooded frame may be queued for other ports too): every frame
 * appended is either a view of the untouched input or a new Buffer.
 *
 * Returns the number of frames appended to `out`, or -1 (nothing appended) when the header is
 * impossible: too short, NEEDS_CSUM offsets other than the TCP/UDP checksum field of the frame's
 * own IP header (csum_start at that header, csum_offset 16 or 6; csumPlaceOk), an unknown GSO
 * type, ECN on a non-TCP type, gso_size under MIN_GSO_SIZE with a GSO type, an EtherType that does not match the GSO type,
 * unparseable or fragmented IP/TCP/UDP headers, a segment that would not fit in an IPv4 total
 * length, or more than MAX_GSO_SEGMENTS segments.
 */
import { finishChecksum, internetChecksum, onesSum, pseudoHeaderSumV4At, pseudoHeaderSumV6At } from './checksum.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VNET_HDR_LEN,
} from './vnet.js';

/** A guard against a tiny gso_size turning one frame into tens of thousands of allocations. */
export const MAX_GSO_SEGMENTS = 2048;

/**
 * The smallest gso_size accepted: Linux's TCP_MIN_MSS (88). No real guest segments smaller (a
 * UFO guest would need an MTU under 108); smaller only multiplies the frames (and the work)
 * one guest frame costs. The native cut-through (device.cc kMinGsoSize) uses the same.
 */
export const MIN_GSO_SIZE = 88;

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const ETHERTYPE_VLAN = 0x8100;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

interface Headers {
  /** Offset of the IP header in the frame. */
  readonly ip: number;
  /** Offset of the transport header. */
  readonly l4: number;
}

/** Offset of the IP header, or -1 when the EtherType (after one optional tag) is not `want`. */
function ipOffset(frame: Buffer, want: number): number {
  if (frame.length < 14) return -1;
  let et = (frame[12]! << 8) | frame[13]!;
  let off = 14;
  if (et === ETHERTYPE_VLAN) {
    if (frame.length < 18) return -1;
    et = (frame[16]! << 8) | frame[17]!;
    off = 18;
  }
  return et === want ? off : -1;
}

function ipv4Headers(frame: Buffer, protocol: number): Headers | undefined {
  const ip = ipOffset(frame, ETHERTYPE_IPV4);
  if (ip < 0 || ip + 20 > frame.length) return undefined;
  const vihl = frame[ip]!;
  const ihl = (vihl & 0x0f) * 4;
  if (vihl >>> 4 !== 4 || ihl < 20 || ip + ihl > frame.length) return undefined;
  if (frame[ip + 9] !== protocol) return undefined;
  if (((frame[ip + 6]! & 0x3f) | frame[ip + 7]!) !== 0) return undefined; // already a fragment
  return { ip, l4: ip + ihl };
}

function ipv6Headers(frame: Buffer, protocol: number): Headers | undefined {
  const ip = ipOffset(frame, ETHERTYPE_IPV6);
  if (ip < 0 || ip + 40 > frame.length || frame[ip]! >>> 4 !== 6) return undefined;
  let nh = frame[ip + 6]!;
  let off = ip + 40;
  for (let n = 0; n < 8 && (nh === 0 || nh === 43 || nh === 60); n++) {
    if (off + 8 > frame.length) return undefined;
    const len = (frame[off + 1]! + 1) * 8;
    nh = frame[off]!;
    off += len;
  }
  if (nh !== protocol || off > frame.length) return undefined;
  return { ip, l4: off };
}

/**
 * Whether a partial checksum (csum_start, csum_offset) is where Linux puts one: the checksum
 * field of the TCP (offset 16) or UDP (offset 6) header the frame's own IP header points to.
 * Anywhere else, completing it would rewrite bytes the switch's checks (source MAC, the
 * rogue-service guard) have already judged.
 */
function csumPlaceOk(frame: Buffer, start: number, offset: number): boolean {
  for (const [proto, off] of [[IPPROTO_TCP, 16], [IPPROTO_UDP, 6]] as const) {
    const h = ipv4Headers(frame, proto) ?? ipv6Headers(frame, proto);
    if (h !== undefined) return start === h.l4 && offset === off && h.l4 + off + 2 <= frame.length;
  }
  return false;
}

/** A copy of `frame` with the checksum of `[start, end)` folded into `start + offset`, 0 as 0xffff. */
function completeChecksum(frame: Buffer, start: number, offset: number): Buffer {
  const copy = Buffer.allocUnsafe(frame.length);
  frame.copy(copy, 0, 0, frame.length);
  const c = finishChecksum(onesSum(copy, start, copy.length));
  copy.writeUInt16BE(c === 0 ? 0xffff : c, start + offset);
  return copy;
}

function segmentTcp(frame: Buffer, v6: boolean, gsoSize: number, out: Buffer[]): number {
  const h = v6 ? ipv6Headers(frame, IPPROTO_TCP) : ipv4Headers(frame, IPPROTO_TCP);
  if (!h) return -1;
  const { ip, l4 } = h;
  if (l4 + 20 > frame.length) return -1;
  const thl = (frame[l4 + 12]! >>> 4) * 4;
  const hdrs = l4 + thl;
  if (thl < 20 || hdrs > frame.length) return -1;
  const payloadLen = frame.length - hdrs;
  const first = Math.min(gsoSize, payloadLen);
  if (!v6 && hdrs - ip + first > 0xffff) return -1;
  if (v6 && hdrs - ip - 40 + first > 0xffff) return -1;
  const n = Math.max(1, Math.ceil(payloadLen / gsoSize));
  if (n > MAX_GSO_SEGMENTS) return -1;

  const seq0 = frame.readUInt32BE(l4 + 4);
  const id0 = v6 ? 0 : frame.readUInt16BE(ip + 4);
  const flags0 = frame[l4 + 13]!;
  for (let i = 0; i < n; i++) {
    const from = hdrs + i * gsoSize;
    const segLen = Math.min(gsoSize, frame.length - from);
    const seg = Buffer.allocUnsafe(hdrs + segLen);
    frame.copy(seg, 0, 0, hdrs);
    frame.copy(seg, hdrs, from, from + segLen);
    const tcpLen = thl + segLen;
    let pseudo: number;
    if (v6) {
      seg.writeUInt16BE(hdrs - ip - 40 + segLen, ip + 4);
      pseudo = pseudoHeaderSumV6At(seg, ip, IPPROTO_TCP, hdrs - l4 + segLen);
    } else {
      const ihl = l4 - ip;
      seg.writeUInt16BE(hdrs - ip + segLen, ip + 2);
      seg.writeUInt16BE((id0 + i) & 0xffff, ip + 4);
      seg[ip + 10] = 0;
      seg[ip + 11] = 0;
      seg.writeUInt16BE(internetChecksum(seg, ip, ip + ihl), ip + 10);
      pseudo = pseudoHeaderSumV4At(seg, ip, IPPROTO_TCP, hdrs - l4 + segLen);
    }
    seg.writeUInt32BE((seq0 + i * gsoSize) >>> 0, l4 + 4);
    let flags = flags0;
    if (i < n - 1) flags &= ~(TCP_FIN | TCP_PSH);
    if (i > 0) flags &= ~TCP_CWR;
    seg[l4 + 13] = flags;
    seg[l4 + 16] = 0;
    seg[l4 + 17] = 0;
    seg.writeUInt16BE(finishChecksum(onesSum(seg, l4, l4 + tcpLen, pseudo)), l4 + 16);
    out.push(seg);
  }
  return n;
}

function fragmentUdp4(frame: Buffer, gsoSize: number, out: Buffer[]): number {
  const h = ipv4Headers(frame, IPPROTO_UDP);
  if (!h) return -1;
  const { ip, l4 } = h;
  const ihl = l4 - ip;
  const udpLen = frame.length - l4;
  if (udpLen < 8 || ihl + udpLen > 0xffff) return -1;
  const fragSize = gsoSize & ~7;
  if (fragSize === 0) return -1;
  const n = Math.ceil(udpLen / fragSize);
  if (n > MAX_GSO_SEGMENTS) return -1;

  // The UDP header (length fixed, checksum from scratch) goes into the first output only.
  const udpHdr = Buffer.allocUnsafe(8);
  frame.copy(udpHdr, 0, l4, l4 + 8);
  udpHdr.writeUInt16BE(udpLen, 4);
  udpHdr[6] = 0;
  udpHdr[7] = 0;
  const sum = onesSum(frame, l4 + 8, frame.length, onesSum(udpHdr, 0, 8, pseudoHeaderSumV4At(frame, ip, IPPROTO_UDP, udpLen)));
  const c = finishChecksum(sum);
  udpHdr.writeUInt16BE(c === 0 ? 0xffff : c, 6);
  const keepDf = n === 1 ? 0x4000 : 0;
  const flags0 = frame.readUInt16BE(ip + 6) & (0x8000 | keepDf); // the reserved bit as it was; DF only if unfragmented
  for (let i = 0; i < n; i++) {
    const from = l4 + i * fragSize;
    const len = Math.min(fragSize, frame.length - from);
    const seg = Buffer.allocUnsafe(l4 + len);
    frame.copy(seg, 0, 0, l4);
    frame.copy(seg, l4, from, from + len);
    if (i === 0) udpHdr.copy(seg, l4);
    seg.writeUInt16BE(ihl + len, ip + 2);
    seg.writeUInt16BE(flags0 | (i < n - 1 ? 0x2000 : 0) | ((i * fragSize) >>> 3), ip + 6);
    seg[ip + 10] = 0;
    seg[ip + 11] = 0;
    seg.writeUInt16BE(internetChecksum(seg, ip, l4), ip + 10);
    out.push(seg);
  }
  return n;
}

/**
 * A TCP frame from a local VM that may go to the gateway whole: NEEDS_CSUM with the checksum
 * where TCP's is (csum_start at the TCP header, csum_offset 16), GSO_NONE or TCPV4/TCPV6
 * (optionally with ECN) matching the EtherType, readable IP and TCP headers. Returns the
 * Ethernet frame (a view, without the vnet header), or null when it must be normalized instead.
 * The TCP checksum field then holds only the pseudo-header sum: the caller marks the frame
 * (markPartialCsum) so that nothing verifies it.
 */
export function tcpOffloadWhole(frameWithVnetHdr: Buffer): Buffer | null {
  const b = frameWithVnetHdr;
  if (b.length < VNET_HDR_LEN + 14 || (b[0]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0) return null;
  const base = b[1]! & ~VIRTIO_NET_HDR_GSO_ECN;
  const gsoSize = b[4]! | (b[5]! << 8);
  const csumStart = b[6]! | (b[7]! << 8);
  const csumOffset = b[8]! | (b[9]! << 8);
  const frame = b.subarray(VNET_HDR_LEN);
  let h: Headers | undefined;
  if (base === VIRTIO_NET_HDR_GSO_TCPV4) h = ipv4Headers(frame, IPPROTO_TCP);
  else if (base === VIRTIO_NET_HDR_GSO_TCPV6) h = ipv6Headers(frame, IPPROTO_TCP);
  else if (base === VIRTIO_NET_HDR_GSO_NONE && b[1] === base) h = ipv4Headers(frame, IPPROTO_TCP) ?? ipv6Headers(frame, IPPROTO_TCP);
  if (h === undefined || csumStart !== h.l4 || csumOffset !== 16 || h.l4 + 20 > frame.length) return null;
  if (base !== VIRTIO_NET_HDR_GSO_NONE && gsoSize === 0) return null;
  return frame;
}

/**
 * Input: a 10-byte virtio_net_hdr followed by an Ethernet frame. Appends plain Ethernet frames
 * to `out` and returns how many, or -1 (see the module comment).
 */
export function normalizeOffload(frameWithVnetHdr: Buffer, out: Buffer[]): number {
  const b = frameWithVnetHdr;
  if (b.length < VNET_HDR_LEN + 14) return -1;
  const flags = b[0]!;
  const gsoType = b[1]!;
  const gsoSize = b[4]! | (b[5]! << 8);
  const csumStart = b[6]! | (b[7]! << 8);
  const csumOffset = b[8]! | (b[9]! << 8);
  const frame = b.subarray(VNET_HDR_LEN);
  const needsCsum = (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
  if (needsCsum && (csumStart >= frame.length || csumStart + csumOffset + 2 > frame.length)) return -1;
  if (needsCsum && !csumPlaceOk(frame, csumStart, csumOffset)) return -1;

  const base = gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
  const ecn = (gsoType & VIRTIO_NET_HDR_GSO_ECN) !== 0;
  if (base === VIRTIO_NET_HDR_GSO_NONE) {
    if (ecn) return -1;
    out.push(needsCsum ? completeChecksum(frame, csumStart, csumOffset) : frame);
    return 1;
  }
  if (gsoSize < MIN_GSO_SIZE) return -1;
  switch (base) {
    case VIRTIO_NET_HDR_GSO_TCPV4:
      return segmentTcp(frame, false, gsoSize, out);
    case VIRTIO_NET_HDR_GSO_TCPV6:
      return segmentTcp(frame, true, gsoSize, out);
    case VIRTIO_NET_HDR_GSO_UDP:
      return ecn ? -1 : fragmentUdp4(frame, gsoSize, out);
    default:
      return -1;
  }
}
