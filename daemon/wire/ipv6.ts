/**
 * IPv6 fixed header (RFC 8200) and the extension-header walk: hop-by-hop options, routing,
 * fragment and destination options, bounded by `maxExtensionHeaders`. Anything else (including
 * AH/ESP and No Next Header) ends the walk and is reported as the upper-layer protocol.
 */
import { fail, ok, type Parsed } from './result.js';

export const IPV6_HEADER_LEN = 40;
export const IPV6_NH_HOP_BY_HOP = 0;
export const IPV6_NH_ROUTING = 43;
export const IPV6_NH_FRAGMENT = 44;
export const IPV6_NH_ICMPV6 = 58;
export const IPV6_NH_NONE = 59;
export const IPV6_NH_DEST_OPTS = 60;
export const DEFAULT_MAX_EXTENSION_HEADERS = 8;

export interface Ipv6Fields {
  readonly trafficClass: number;
  /** 20 bits. */
  readonly flowLabel: number;
  readonly hopLimit: number;
  /** 16 bytes each. */
  readonly src: Uint8Array;
  readonly dst: Uint8Array;
}

export interface Ipv6ExtensionHeader {
  /** The Next Header value that announced this header (0, 43, 44 or 60). */
  readonly type: number;
  /** Offset of the header from the start of the IPv6 packet. */
  readonly offset: number;
  /** Whole header length in bytes (8 for a fragment header). */
  readonly length: number;
  /** View of the header after its first two bytes (Next Header and length/reserved). */
  readonly body: Buffer;
}

export interface Ipv6Fragment {
  /** In bytes (a multiple of 8). */
  readonly offset: number;
  readonly moreFragments: boolean;
  readonly id: number;
}

export interface Ipv6Packet extends Ipv6Fields {
  readonly src: Buffer;
  readonly dst: Buffer;
  /** Next Header of the fixed header. */
  readonly nextHeader: number;
  readonly payloadLength: number;
  readonly extensions: readonly Ipv6ExtensionHeader[];
  /** Set when a fragment header was walked. For a non-first fragment the walk stops there. */
  readonly fragment?: Ipv6Fragment | undefined;
  /** The Next Header value after the extension headers (6 TCP, 17 UDP, 58 ICMPv6, 59 none...). */
  readonly protocol: number;
  /** Offset of the upper-layer header from the start of the packet. */
  readonly upperOffset: number;
  /** View of bytes [upperOffset, 40 + payloadLength): link-layer padding excluded. */
  readonly payload: Buffer;
}

export interface Ipv6ParseOptions {
  /** Default 8. More extension headers than this is an error ('limit'). */
  readonly maxExtensionHeaders?: number;
}

export function parseIpv6(buf: Buffer, opts?: Ipv6ParseOptions): Parsed<Ipv6Packet> {
  if (buf.length < IPV6_HEADER_LEN) return fail('ipv6', 'truncated', `${buf.length} bytes < 40`);
  const b0 = buf[0]!;
  if (b0 >>> 4 !== 6) return fail('ipv6', 'bad-version', `version ${b0 >>> 4}`);
  const payloadLength = (buf[4]! << 8) | buf[5]!;
  const end = IPV6_HEADER_LEN + payloadLength;
  if (end > buf.length) return fail('ipv6', 'truncated', `payload length ${payloadLength} > buffer ${buf.length - 40}`);
  const max = opts?.maxExtensionHeaders ?? DEFAULT_MAX_EXTENSION_HEADERS;
  const nextHeader = buf[6]!;
  const extensions: Ipv6ExtensionHeader[] = [];
  let fragment: Ipv6Fragment | undefined;
  let nh = nextHeader;
  let off = IPV6_HEADER_LEN;
  for (;;) {
    if (nh === IPV6_NH_HOP_BY_HOP || nh === IPV6_NH_ROUTING || nh === IPV6_NH_DEST_OPTS) {
      if (nh === IPV6_NH_HOP_BY_HOP && off !== IPV6_HEADER_LEN) return fail('ipv6', 'bad-value', 'hop-by-hop header not first');
      if (extensions.length >= max) return fail('ipv6', 'limit', `more than ${max} extension headers`);
      if (off + 2 > end) return fail('ipv6', 'truncated', `extension header ${nh} at ${off}`);
      const len = (buf[off + 1]! + 1) * 8;
      if (off + len > end) return fail('ipv6', 'truncated', `extension header ${nh} of ${len} bytes at ${off}`);
      extensions.push({ type: nh, offset: off, length: len, body: buf.subarray(off + 2, off + len) });
      nh = buf[off]!;
      off += len;
    } else if (nh === IPV6_NH_FRAGMENT) {
      if (extensions.length >= max) return fail('ipv6', 'limit', `more than ${max} extension headers`);
      if (fragment) return fail('ipv6', 'bad-value', 'two fragment headers');
      if (off + 8 > end) return fail('ipv6', 'truncated', `fragment header at ${off}`);
      const fo = (buf[off + 2]! << 8) | buf[off + 3]!;
      fragment = { offset: fo & 0xfff8, moreFragments: (fo & 1) !== 0, id: buf.readUInt32BE(off + 4) };
      extensions.push({ type: nh, offset: off, length: 8, body: buf.subarray(off + 2, off + 8) });
      nh = buf[off]!;
      off += 8;
      if (fragment.offset !== 0) break;
    } else {
      break;
    }
  }
  return ok({
    trafficClass: ((b0 & 0x0f) << 4) | (buf[1]! >>> 4),
    flowLabel: ((buf[1]! & 0x0f) << 16) | (buf[2]! << 8) | buf[3]!,
    payloadLength,
    nextHeader,
    hopLimit: buf[7]!,
    src: buf.subarray(8, 24),
    dst: buf.subarray(24, 40),
    extensions,
    fragment,
    protocol: nh,
    upperOffset: off,
    payload: buf.subarray(off, end),
  });
}

/** Writes the 40-byte fixed header at `off`; returns 40. */
export function emitIpv6Header(f: Ipv6Fields & { readonly nextHeader: number }, payloadLength: number, buf: Buffer, off = 0): number {
  if (payloadLength > 0xffff) throw new RangeError(`IPv6 payload length ${payloadLength} > 65535`);
  const tc = f.trafficClass & 0xff;
  buf.writeUInt32BE(((6 << 28) | (tc << 20) | (f.flowLabel & 0xfffff)) >>> 0, off);
  buf.writeUInt16BE(payloadLength, off + 4);
  buf[off + 6] = f.nextHeader & 0xff;
  buf[off + 7] = f.hopLimit & 0xff;
  buf.set(f.src.subarray(0, 16), off + 8);
  buf.set(f.dst.subarray(0, 16), off + 24);
  return IPV6_HEADER_LEN;
}

/**
 * An extension header to emit. For 0/43/60 the body follows the two-byte Next Header/length
 * prefix and is zero-padded to a multiple of 8 (zero bytes are Pad1 options); for 44 the body is
 * the 6 bytes after Next Header and Reserved (see `ipv6FragmentBody`).
 */
export interface Ipv6ExtensionInit {
  readonly type: number;
  readonly body: Uint8Array;
}

export function ipv6ExtensionLength(e: Ipv6ExtensionInit): number {
  if (e.type === IPV6_NH_FRAGMENT) return 8;
  return (e.body.length + 2 + 7) & ~7;
}

export function ipv6FragmentBody(offset: number, moreFragments: boolean, id: number): Buffer {
  const b = Buffer.alloc(6);
  b.writeUInt16BE((offset & 0xfff8) | (moreFragments ? 1 : 0), 0);
  b.writeUInt32BE(id >>> 0, 2);
  return b;
}

export interface Ipv6PacketInit extends Ipv6Fields {
  /** Upper-layer protocol, written into the last extension header (or the fixed header). */
  readonly protocol: number;
  readonly extensions?: readonly Ipv6ExtensionInit[] | undefined;
  readonly payload: Uint8Array;
}

export function ipv6Length(p: Ipv6PacketInit): number {
  let n = IPV6_HEADER_LEN + p.payload.length;
  for (const e of p.extensions ?? []) n += ipv6ExtensionLength(e);
  return n;
}

/** Fixed header, extension headers and a copy of the payload; returns the total length. */
export function emitIpv6(p: Ipv6PacketInit, buf: Buffer, off = 0): number {
  const exts = p.extensions ?? [];
  const total = ipv6Length(p);
  emitIpv6Header({ ...p, nextHeader: exts.length > 0 ? exts[0]!.type : p.protocol }, total - IPV6_HEADER_LEN, buf, off);
  let pos = off + IPV6_HEADER_LEN;
  for (let i = 0; i < exts.length; i++) {
    const e = exts[i]!;
    const len = ipv6ExtensionLength(e);
    if (len > 2048) throw new RangeError(`IPv6 extension header of ${len} bytes`);
    buf[pos] = i + 1 < exts.length ? exts[i + 1]!.type : p.protocol;
    buf[pos + 1] = e.type === IPV6_NH_FRAGMENT ? 0 : len / 8 - 1;
    const body = e.type === IPV6_NH_FRAGMENT ? e.body.subarray(0, 6) : e.body;
    buf.fill(0, pos + 2, pos + len);
    buf.set(body, pos + 2);
    pos += len;
  }
  buf.set(p.payload, pos);
  return total;
}

export function encodeIpv6(p: Ipv6PacketInit): Buffer {
  const buf = Buffer.allocUnsafe(ipv6Length(p));
  emitIpv6(p, buf, 0);
  return buf;
}

// Hot-path accessors; the caller has checked that 40 bytes exist at `off`.

export function ipv6NextHeader(buf: Buffer, off = 0): number {
  return buf[off + 6]!;
}

export function ipv6PayloadLen(buf: Buffer, off = 0): number {
  return (buf[off + 4]! << 8) | buf[off + 5]!;
}

export function ipv6HopLimit(buf: Buffer, off = 0): number {
  return buf[off + 7]!;
}

/** Decrements the hop limit (no checksum in IPv6); returns the new value, 0 stays 0. */
export function ipv6DecrementHopLimit(buf: Buffer, off = 0): number {
  const h = buf[off + 7]!;
  if (h === 0) return 0;
  buf[off + 7] = h - 1;
  return h - 1;
}

export function ipv6IsMulticast(addr: Uint8Array, off = 0): boolean {
  return addr[off] === 0xff;
}

/** 33:33 followed by the last four bytes of the group address (RFC 2464 §7). */
export function ipv6MulticastMac(addr: Uint8Array, off = 0): number {
  return 0x3333 * 0x1_0000_0000 + (((addr[off + 12]! << 24) | (addr[off + 13]! << 16) | (addr[off + 14]! << 8) | addr[off + 15]!) >>> 0);
}

/** ff02::1:ffXX:XXXX for a unicast address (RFC 4291 §2.7.1). */
export function ipv6SolicitedNode(addr: Uint8Array, off = 0): Buffer {
  const b = Buffer.from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0]);
  b[13] = addr[off + 13]!;
  b[14] = addr[off + 14]!;
  b[15] = addr[off + 15]!;
  return b;
}

// Address text lives in ip-text.ts.

