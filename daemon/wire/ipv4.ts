/** IPv4 header (RFC 791): options are kept as an opaque view, the header checksum verified. */
import { adjustChecksum, internetChecksum, onesSum } from './checksum.js';
import { fail, ok, type Parsed } from './result.js';

export const IPV4_MIN_HEADER_LEN = 20;
export const IPV4_MAX_HEADER_LEN = 60;
export const IPV4_MAX_TOTAL_LEN = 65535;

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;

/** What an emitter needs; lengths and the checksum are computed. */
export interface Ipv4Fields {
  /** Differentiated services code point, 0..63. */
  readonly dscp: number;
  /** ECN bits, 0..3. */
  readonly ecn: number;
  readonly id: number;
  readonly dontFragment: boolean;
  readonly moreFragments: boolean;
  /** In bytes (the wire field times 8); a multiple of 8 below 65536. */
  readonly fragmentOffset: number;
  readonly ttl: number;
  readonly protocol: number;
  /** Addresses as unsigned 32-bit numbers. */
  readonly src: number;
  readonly dst: number;
  /** Raw option bytes; padded with zeros (End of Option List) to a multiple of 4, at most 40. */
  readonly options?: Uint8Array | undefined;
}

export interface Ipv4Packet extends Ipv4Fields {
  readonly headerLength: number;
  readonly totalLength: number;
  readonly checksum: number;
  /** View of the option bytes (empty when IHL is 5). */
  readonly options: Buffer;
  /** View of bytes [headerLength, totalLength): link-layer padding is excluded. */
  readonly payload: Buffer;
}

export interface Ipv4ParseOptions {
  /** Default true. False for packets whose checksum was already validated (e.g. offloaded). */
  readonly verifyChecksum?: boolean;
}

export function parseIpv4(buf: Buffer, opts?: Ipv4ParseOptions): Parsed<Ipv4Packet> {
  if (buf.length < IPV4_MIN_HEADER_LEN) return fail('ipv4', 'truncated', `${buf.length} bytes < 20`);
  const vihl = buf[0]!;
  if (vihl >>> 4 !== 4) return fail('ipv4', 'bad-version', `version ${vihl >>> 4}`);
  const headerLength = (vihl & 0x0f) * 4;
  if (headerLength < IPV4_MIN_HEADER_LEN) return fail('ipv4', 'bad-length', `IHL ${headerLength / 4} < 5`);
  if (headerLength > buf.length) return fail('ipv4', 'truncated', `header ${headerLength} > buffer ${buf.length}`);
  const totalLength = (buf[2]! << 8) | buf[3]!;
  if (totalLength < headerLength) return fail('ipv4', 'bad-length', `total length ${totalLength} < header ${headerLength}`);
  if (totalLength > buf.length) return fail('ipv4', 'truncated', `total length ${totalLength} > buffer ${buf.length}`);
  if (opts?.verifyChecksum !== false && onesSum(buf, 0, headerLength) !== 0xffff) {
    return fail('ipv4', 'bad-checksum', 'header checksum');
  }
  const frag = (buf[6]! << 8) | buf[7]!;
  return ok({
    dscp: buf[1]! >>> 2,
    ecn: buf[1]! & 3,
    id: (buf[4]! << 8) | buf[5]!,
    dontFragment: (frag & 0x4000) !== 0,
    moreFragments: (frag & 0x2000) !== 0,
    fragmentOffset: (frag & 0x1fff) * 8,
    ttl: buf[8]!,
    protocol: buf[9]!,
    checksum: (buf[10]! << 8) | buf[11]!,
    src: buf.readUInt32BE(12),
    dst: buf.readUInt32BE(16),
    headerLength,
    totalLength,
    options: buf.subarray(IPV4_MIN_HEADER_LEN, headerLength),
    payload: buf.subarray(headerLength, totalLength),
  });
}

export function ipv4HeaderLength(f: Ipv4Fields): number {
  const optLen = f.options ? f.options.length : 0;
  return IPV4_MIN_HEADER_LEN + ((optLen + 3) & ~3);
}

/**
 * Writes the header (with options and a fresh checksum) at `off` for a payload of
 * `payloadLength` bytes; returns the header length.
 */
export function emitIpv4Header(f: Ipv4Fields, payloadLength: number, buf: Buffer, off = 0): number {
  const hl = ipv4HeaderLength(f);
  if (hl > IPV4_MAX_HEADER_LEN) throw new RangeError(`IPv4 options of ${hl - 20} bytes > 40`);
  const total = hl + payloadLength;
  if (total > IPV4_MAX_TOTAL_LEN) throw new RangeError(`IPv4 total length ${total} > 65535`);
  buf[off] = 0x40 | (hl >>> 2);
  buf[off + 1] = ((f.dscp & 0x3f) << 2) | (f.ecn & 3);
  buf.writeUInt16BE(total, off + 2);
  buf.writeUInt16BE(f.id & 0xffff, off + 4);
  buf.writeUInt16BE((f.dontFragment ? 0x4000 : 0) | (f.moreFragments ? 0x2000 : 0) | ((f.fragmentOffset >>> 3) & 0x1fff), off + 6);
  buf[off + 8] = f.ttl & 0xff;
  buf[off + 9] = f.protocol & 0xff;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  buf.writeUInt32BE(f.src >>> 0, off + 12);
  buf.writeUInt32BE(f.dst >>> 0, off + 16);
  if (f.options && f.options.length > 0) {
    buf.set(f.options, off + 20);
    buf.fill(0, off + 20 + f.options.length, off + hl);
  }
  buf.writeUInt16BE(internetChecksum(buf, off, off + hl), off + 10);
  return hl;
}

/** Header plus a copy of the payload; returns the total length. */
export function emitIpv4(p: Ipv4Fields & { readonly payload: Uint8Array }, buf: Buffer, off = 0): number {
  const hl = emitIpv4Header(p, p.payload.length, buf, off);
  buf.set(p.payload, off + hl);
  return hl + p.payload.length;
}

export function encodeIpv4(p: Ipv4Fields & { readonly payload: Uint8Array }): Buffer {
  const buf = Buffer.allocUnsafe(ipv4HeaderLength(p) + p.payload.length);
  emitIpv4(p, buf, 0);
  return buf;
}

/** Recomputes the header checksum of the IPv4 header at `off` in place. */
export function fixIpv4Checksum(buf: Buffer, off = 0): void {
  const hl = (buf[off]! & 0x0f) * 4;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  buf.writeUInt16BE(internetChecksum(buf, off, off + hl), off + 10);
}

// Hot-path accessors: the caller has checked the header (e.g. with parseIpv4) or at least
// that 20 bytes exist at `off`.

export function ipv4HeaderLen(buf: Buffer, off = 0): number {
  return (buf[off]! & 0x0f) * 4;
}

export function ipv4TotalLen(buf: Buffer, off = 0): number {
  return (buf[off + 2]! << 8) | buf[off + 3]!;
}

export function ipv4Protocol(buf: Buffer, off = 0): number {
  return buf[off + 9]!;
}

export function ipv4Ttl(buf: Buffer, off = 0): number {
  return buf[off + 8]!;
}

export function ipv4Src(buf: Buffer, off = 0): number {
  return ((buf[off + 12]! << 24) | (buf[off + 13]! << 16) | (buf[off + 14]! << 8) | buf[off + 15]!) >>> 0;
}

export function ipv4Dst(buf: Buffer, off = 0): number {
  return ((buf[off + 16]! << 24) | (buf[off + 17]! << 16) | (buf[off + 18]! << 8) | buf[off + 19]!) >>> 0;
}

/** True for any fragment (MF set or a non-zero offset). */
export function ipv4IsFragment(buf: Buffer, off = 0): boolean {
  return ((buf[off + 6]! & 0x3f) | buf[off + 7]!) !== 0;
}

/**
 * Decrements the TTL and patches the header checksum incrementally (RFC 1624).
 * Returns the new TTL; a TTL already 0 is left alone and 0 returned.
 */
export function ipv4DecrementTtl(buf: Buffer, off = 0): number {
  const ttl = buf[off + 8]!;
  if (ttl === 0) return 0;
  const oldWord = (ttl << 8) | buf[off + 9]!;
  buf[off + 8] = ttl - 1;
  const sum = adjustChecksum((buf[off + 10]! << 8) | buf[off + 11]!, oldWord, oldWord - 0x100);
  buf[off + 10] = sum >>> 8;
  buf[off + 11] = sum & 0xff;
  return ttl - 1;
}

// Address text lives in ip-text.ts.

